"""A small HTTP object store: ``PUT /<key>`` stores the body (its ``X-Edgeship-Sha256``
header, when sent, must match), ``GET``/``HEAD /<key>`` return it. Files land under a
directory, written atomically; keys are one or more safe path segments.

It is what a capture pull's HTTP transport needs on a LAN, and what the tests, the benchmark
and the demo run on 127.0.0.1 (any HTTP endpoint or a pre-signed object-store URL template
works the same way on the device side). ``fail_next(n)`` makes the next n PUTs break the
connection (for interruption tests); ``before_put(key)``, when set, runs before a PUT is
stored and answered (the uploader waits meanwhile: races with the device's writer).
"""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from runtime.fsutil import atomic_write_bytes

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,4}$")
MAX_OBJECT_BYTES = 256 << 20


class ObjectStore:
    """Serve ``root`` on ``host:port`` (0 = a free port) in a background thread."""

    def __init__(self, root: str | Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.puts = 0
        self.broken = 0
        self._fail = 0
        self.before_put: Callable[[str], None] | None = None
        self._lock = threading.Lock()
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: no access log on stderr
                pass

            def _path(self) -> Path | None:
                key = self.path.split("?", 1)[0].lstrip("/")
                return store.root / key if _KEY.match(key) else None

            def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
                p = self._path()
                n = int(self.headers.get("Content-Length") or -1)
                if p is None or not 0 <= n <= MAX_OBJECT_BYTES:
                    return self._answer(400, b"bad key or length")
                if store._take_failure():
                    self.rfile.read(min(n, 10))
                    self.close_connection = True
                    self.connection.close()  # the client sees its upload cut off
                    return
                if store.before_put is not None:
                    store.before_put(str(p.relative_to(store.root)))
                data = self.rfile.read(n)
                want = self.headers.get("X-Edgeship-Sha256")
                if len(data) != n or (want and hashlib.sha256(data).hexdigest() != want):
                    return self._answer(400, b"body does not match its length or sha256")
                p.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(p, data)
                with store._lock:
                    store.puts += 1
                self._answer(201, b"")

            def do_GET(self) -> None:  # noqa: N802
                self._get(body=True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._get(body=False)

            def _get(self, *, body: bool) -> None:
                p = self._path()
                if p is None or not p.is_file():
                    return self._answer(404, b"not found" if body else b"")
                data = p.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _answer(self, code: int, text: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="edgeship-objstore", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _take_failure(self) -> bool:
        with self._lock:
            if self._fail > 0:
                self._fail -= 1
                self.broken += 1
                return True
            return False

    def fail_next(self, n: int) -> None:
        """Cut off the next ``n`` uploads (the device sees a broken connection)."""
        with self._lock:
            self._fail = n

    def start(self) -> "ObjectStore":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "ObjectStore":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
