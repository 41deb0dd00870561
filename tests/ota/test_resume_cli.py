"""Resumable downloads across attempts, the publishing CLI end to end, import weight."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

from device_agent.ota import State
from device_agent.ota.errors import FetchError

from .conftest import PY, REPO, build_env


def _cutting_handler(cut_after: int):
    """Serves target bodies but breaks the connection after ``cut_after`` bytes, once per file."""
    from toolchain.ota.serve import RepoRequestHandler

    cut_done: set[str] = set()

    class Cutting(RepoRequestHandler):
        def do_GET(self):
            if not self.path.startswith("/targets/") or self.path in cut_done or self.headers.get("Range"):
                return super().do_GET()
            cut_done.add(self.path)
            data = open(self.translate_path(self.path), "rb").read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:cut_after])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    return Cutting


def test_download_resumes_with_range_after_a_broken_connection(tmp_path):
    env = build_env(tmp_path, handler=_cutting_handler(300_000))
    try:
        pub = env.publish(env.bundle(release=2, kind="good2", pad_bytes=1_000_000))
        store, agent, up = env.device()
        res = up.update("m")
        assert res.state is State.FAILED and isinstance(up.last_error, FetchError), (res, up.last_error)
        parts = list((env.state / "update" / "downloads" / "partial").glob("*.part"))
        assert len(parts) == 1
        kept = parts[0].stat().st_size  # whole chunks received before the break (<= 300000)
        assert 100_000 < kept <= 300_000
        agent.close()
        store, agent, up = env.device()  # a restart: a new process would see the same files
        res = up.update("m")
        assert res.state is State.COMMIT, (res, up.last_error)
        assert store.active().sha256 == pub.sha256
        ranges = [r for p, r in env.server.requests if p.startswith("/targets/") and r]
        assert ranges == [f"bytes={kept}-"]
        assert up._repo is None  # noqa: SLF001 - finished updates drop their repository session
        agent.close()
    finally:
        env.server.shutdown()


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "toolchain.cli", *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_publish_cli_and_repo_server(tmp_path):
    from .conftest import make_bundle

    keys, repo = tmp_path / "keys", tmp_path / "repo"
    p = _cli("keys", "init", "--dir", str(keys), "--keys", "root=2", "--threshold", "root=2", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["roles"]["root"] == {"keys": 2, "threshold": 2}
    assert len(list((keys / "offline" / "root").glob("*.pem"))) == 2
    assert len(list((keys / "online" / "timestamp").glob("*.pem"))) == 1
    assert _cli("keys", "init", "--dir", str(keys)).returncode == 2  # never overwrites keys
    b1 = make_bundle(tmp_path / "b", release=1)
    p = _cli("publish", str(b1), "--repo", str(repo), "--keys", str(keys), "--json", "--init")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["release"] == 1
    p = _cli("publish", str(make_bundle(tmp_path / "b", release=1, kind="good2")), "--repo", str(repo),
             "--keys", str(keys))
    assert p.returncode == 2 and "not above the latest" in p.stderr
    p = _cli("publish", str(tmp_path / "missing.tar"), "--repo", str(repo), "--keys", str(keys))
    assert p.returncode == 2 and "missing.tar" in p.stderr
    p = _cli("keys", "rotate", "--dir", str(keys), "--repo", str(repo), "--role", "root", "--json")
    assert p.returncode == 0, p.stderr
    assert (repo / "metadata" / "2.root.json").exists()
    rows = json.loads(_cli("repo", "list", str(repo), "--json").stdout)
    assert [(r["name"], r["release"]) for r in rows] == [("m", 1)]
    table = _cli("repo", "list", str(repo)).stdout.splitlines()
    assert table[0].split() == ["NAME", "RELEASE", "ENGINE/PRECISION", "BYTES", "SHA256", "TARGET"]
    assert table[1].split()[:2] == ["m", "r1"] and len(table) == 2
    assert table[0].index("TARGET") == table[1].index(rows[0]["target"])      # columns line up
    assert table[0].index("SHA256") == table[1].index(rows[0]["sha256"][:12])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = subprocess.Popen([PY, "-m", "toolchain.cli", "repo", "serve", str(repo), "--port", str(port)],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        import urllib.request

        for _ in range(100):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metadata/timestamp.json", timeout=2).read()
                break
            except OSError:
                time.sleep(0.05)
        assert json.loads(body)["signed"]["_type"] == "timestamp"
        req = urllib.request.Request(f"http://127.0.0.1:{port}/metadata/1.root.json", headers={"Range": "bytes=10-"})
        with urllib.request.urlopen(req, timeout=2) as r:
            assert r.status == 206
            assert r.read() == (repo / "metadata" / "1.root.json").read_bytes()[10:]
    finally:
        srv.send_signal(signal.SIGINT)
        srv.wait(10)


def test_update_modules_import_no_toolchain_or_heavy_packages():
    code = ("import sys, device_agent.ota, device_agent.ota.cli, device_agent.ota.poll, "
            "device_agent.ota.gate, device_agent.ota.trust;"
            "bad=[m for m in ('torch','onnx','openvino','toolchain','tensorflow') if m in sys.modules];"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
