"""The control route's pure parts: request parsing and the NDJSON stream with heartbeats."""

from __future__ import annotations

import json
import queue
import threading

import pytest

from device_agent.serving import update_route as ur
from runtime.contracts.control import UpdateRequest


@pytest.mark.parametrize("body,error", [
    (b"not json", "not JSON"),
    (b"[1]", "JSON object"),
    (b"{}", "'model'"),
    (b'{"model": "m", "release": 0}', "positive integer"),
    (b'{"model": "m", "release": true}', "positive integer"),
    (b'{"model": "m", "deployment_id": 5}', "deployment_id"),
    (b'{"model": "m", "force": true}', "unknown field"),
    (b'{"model": "' + b"m" * 5000 + b'"}', "over 4096"),
])
def test_bad_requests_are_refused_naming_the_field(body, error):
    with pytest.raises(ValueError, match=error):
        UpdateRequest.parse(body)


def test_good_request():
    r = UpdateRequest.parse(b'{"model": "m", "release": 3, "repository_url": "/media/usb/repo"}')
    assert r == UpdateRequest(model="m", release=3, repository_url="/media/usb/repo")
    assert UpdateRequest.parse(json.dumps(r.to_json()).encode()) == r


def test_stream_sends_heartbeats_then_events_then_the_result(monkeypatch):
    monkeypatch.setattr(ur, "HEARTBEAT_S", 0.05)
    q: queue.Queue = queue.Queue()
    first = ("event", {"state": "fetch"})

    def later():
        import time

        time.sleep(0.2)
        q.put(("event", {"state": "verify"}))
        q.put(("result", {"state": "commit"}))
        q.put(("event", {"state": "never sent"}))

    threading.Thread(target=later).start()
    lines = list(ur._lines(first, q))  # noqa: SLF001
    data = [json.loads(x) for x in lines if x.strip()]
    assert data == [{"event": {"state": "fetch"}}, {"event": {"state": "verify"}}, {"result": {"state": "commit"}}]
    assert lines.count("\n") >= 2  # heartbeats while nothing happened


def test_stream_ends_with_an_error_line():
    q: queue.Queue = queue.Queue()
    q.put(("error", {"error": "boom", "reason": "internal"}))
    lines = list(ur._lines(("event", {"state": "fetch"}), q))  # noqa: SLF001
    assert json.loads(lines[-1]) == {"error": "boom", "reason": "internal"}
