"""`edgeship repo serve`: a small static HTTP server for a TUF repository.

For small setups and tests: a threading ``http.server`` with single-range ``Range: bytes=N-``
support so devices can resume downloads. In production put the directory behind any static
HTTP server, object store or CDN: a TUF repository is plain files, trust comes from signatures.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class RepoRequestHandler(SimpleHTTPRequestHandler):
    """Serves files read-only; honours ``Range: bytes=START-[END]`` with 206."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:  # type: ignore[attr-defined]
            super().log_message(format, *args)

    def do_PUT(self) -> None:  # read-only server
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)

    def send_head(self):
        rng = self.headers.get("Range")
        path = self.translate_path(self.path)
        if not rng or not os.path.isfile(path):
            return super().send_head()
        m = _RANGE.match(rng.strip())
        size = os.path.getsize(path)
        if not m or int(m.group(1)) >= size:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        f = open(path, "rb")
        f.seek(start)
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        return _Limited(f, end - start + 1)


class _Limited:
    """A file object that yields at most ``n`` bytes (for ``copyfile``)."""

    def __init__(self, f, n: int) -> None:
        self._f, self._left = f, n

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = self._left if size < 0 else min(size, self._left)
        data = self._f.read(size)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._f.close()


def make_server(directory: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 0,
                verbose: bool = False, handler=RepoRequestHandler) -> ThreadingHTTPServer:
    """A server for ``directory`` bound to ``host:port`` (port 0 picks a free port)."""
    h = functools.partial(handler, directory=os.fspath(directory))
    srv = ThreadingHTTPServer((host, port), h)
    srv.daemon_threads = True
    srv.verbose = verbose  # type: ignore[attr-defined]
    return srv


def serve_in_thread(directory: str | os.PathLike, **kw) -> tuple[ThreadingHTTPServer, str]:
    """Start a server on a background thread; returns it and its base URL (stop with ``shutdown``)."""
    srv = make_server(directory, **kw)
    threading.Thread(target=srv.serve_forever, name="edgeship-repo", daemon=True).start()
    host, port = srv.server_address[:2]
    return srv, f"http://{host}:{port}"
