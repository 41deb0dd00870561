"""Half-open connections against a real `edgeship-agent run`: closed after the header timeout,
never more than the cap, and while the cap is reached health, inference and control requests
keep being answered; when every connection is busy a new request gets a fast 503, not a hang."""

from __future__ import annotations

import http.client
import json
import socket
import time

from agentproc import agent_process

BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})


def _half_open(port: int, n: int, head: bytes) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(head)
        out.append(s)
    return out


def _closed_by_server(s: socket.socket, timeout_s: float) -> bool:
    s.settimeout(timeout_s)
    try:
        return s.recv(1024) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def _request(port: int, method: str, path: str, body: str | None = None, headers=None, timeout_s: float = 5.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_half_open_connections_time_out_and_give_way_at_the_cap(tmp_path, bundles):
    with agent_process(tmp_path, bundles["v1"].path, header_timeout_s=1.0, max_connections=30) as (_, port, _s):
        token = (tmp_path / "state" / "control.token").read_text().strip()
        t0 = time.monotonic()
        slow = _half_open(port, 60, b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: a\r\nContent-Le")
        # twice the cap of half-open connections: every real request is still answered
        for _ in range(3):
            assert _request(port, "GET", "/v2/health/ready")[0] == 200
            status, body = _request(port, "POST", "/v2/models/tiny/infer", BODY)
            assert status == 200, body
            assert _request(port, "GET", "/edgeship/v1/status", headers={"X-Edgeship-Token": token})[0] == 200
        # at the cap half-open connections gave way (60 half-open + 9 real ones on a cap of 30: at
        # least 30 evicted), before the 1 s header timeout could close any. Which ones go depends on
        # how far each got (a connection whose first bytes the server has not read yet goes before
        # one inside its headers), so they are counted over all 60, not only the oldest.
        time.sleep(max(0.0, t0 + 0.8 - time.monotonic()))
        closed = sum(_closed_by_server(s, 0.001) for s in slow)
        if time.monotonic() - t0 < 1.0:  # else the header timeout may have closed some: not judged here
            assert closed >= 30, f"only {closed} of 60 half-open connections gave way at the cap of 30"
        # the rest are closed by the header timeout
        assert all(_closed_by_server(s, 3.0) for s in slow)
        assert time.monotonic() - t0 < 6.0  # the timeout counts from the first byte, trickling does not extend it
        for s in slow:
            s.close()
        # a trickler: one header byte every 0.3 s is still closed about 1 s after connecting
        s = socket.create_connection(("127.0.0.1", port))
        t1, closed = time.monotonic(), False
        for ch in b"GET /v2/health/live HTTP/1.1\r\nHost: a\r\n":
            try:
                s.sendall(bytes([ch]))
            except OSError:
                closed = True
                break
            if _closed_by_server(s, 0.3):
                closed = True
                break
        assert closed and time.monotonic() - t1 < 2.5
        s.close()


def test_a_request_beyond_a_cap_of_busy_connections_gets_a_fast_503(tmp_path, bundles):
    with agent_process(tmp_path, bundles["v1"].path, max_connections=8, body_timeout_s=30.0) as (_, port, _s):
        head = (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n"
                + b'{"inputs": [')  # a body that is still coming: busy, not evictable
        busy = _half_open(port, 8, head)
        time.sleep(0.2)
        t0 = time.perf_counter()
        status, body = _request(port, "GET", "/v2/health/live", timeout_s=5.0)
        assert status == 503 and "connection cap (8)" in json.loads(body)["error"]
        assert time.perf_counter() - t0 < 1.0
        for s in busy:
            s.close()
        time.sleep(0.2)
        assert _request(port, "POST", "/v2/models/tiny/infer", BODY)[0] == 200
