"""A ``tuf.ngclient`` fetcher that resumes target downloads and also reads ``file://`` mirrors.

- Metadata goes through ngclient's own in-memory path (small, always fetched whole).
- A target download keeps its bytes in ``partial_dir/<sha256(url)>.part``. After a restart
  the fetcher asks for the rest with ``Range: bytes=N-``; a server that answers 200 (no
  range support) or a Content-Range that does not start at N makes it start over. The URL
  holds the target's hash (consistent snapshots), so a partial file never mixes two objects.
- The signed length is a hard cap: a byte past it deletes the partial file and raises
  ``DownloadLengthMismatchError`` (endless data). A failed hash check also deletes it.
  ngclient verifies length and hashes of the whole file after the download.
- ``file://`` URLs (an offline copy of a repository) are read with the same code and go
  through the same verification; a missing file is a 404 so root rotation ends cleanly.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator
from urllib.parse import unquote, urlparse

from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

_CHUNK = 64 << 10


class _Response:
    def __init__(self, status: int, chunks: Iterator[bytes], start: int | None, close) -> None:
        self.status, self.chunks, self.start, self.close = status, chunks, start, close


class ResumableFetcher(FetcherInterface):
    """HTTP(S) via urllib3 and ``file://`` URLs; resumable, length-capped target downloads."""

    def __init__(self, *, partial_dir: str | os.PathLike, timeout_s: float = 30.0,
                 user_agent: str = "edgeship-agent") -> None:
        self.partial_dir = Path(partial_dir)
        self.timeout_s = timeout_s
        self.user_agent = user_agent
        self.resumed_bytes = 0  # bytes reused from partial files (for tests and telemetry)
        self._pool = None

    # -- transport ----------------------------------------------------------------
    def _open(self, url: str, start: int) -> _Response:
        u = urlparse(url)
        if u.scheme == "file":
            return self._open_file(Path(unquote(u.path)), start)
        if u.scheme not in ("http", "https"):
            raise exceptions.DownloadError(f"unsupported URL scheme in {url!r} (use http, https or file)")
        import urllib3

        if self._pool is None:
            self._pool = urllib3.PoolManager(timeout=urllib3.Timeout(self.timeout_s), retries=urllib3.Retry(2, redirect=3))
        headers = {"User-Agent": self.user_agent}
        if start:
            headers["Range"] = f"bytes={start}-"
        try:
            r = self._pool.request("GET", url, headers=headers, preload_content=False)
        except urllib3.exceptions.HTTPError as e:
            raise exceptions.DownloadError(f"{url}: {e}") from e
        if r.status >= 400 and r.status != 416:
            r.release_conn()
            raise exceptions.DownloadHTTPError(f"{url}: HTTP {r.status}", r.status)
        got = None
        if r.status == 206:
            cr = r.headers.get("Content-Range", "")
            try:
                got = int(cr.split()[1].split("-")[0])
            except (IndexError, ValueError):
                got = -1
        return _Response(r.status, _stream_http(r, url), got, r.release_conn)

    @staticmethod
    def _open_file(path: Path, start: int) -> _Response:
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise exceptions.DownloadHTTPError(f"{path}: not found", 404) from None
        except OSError as e:
            raise exceptions.DownloadError(f"{path}: {e}") from e
        size = os.fstat(f.fileno()).st_size
        if start and start >= size:
            f.close()
            return _Response(416, iter(()), None, lambda: None)
        f.seek(start)
        return _Response(206 if start else 200, iter(lambda: f.read(_CHUNK), b""), start or None, f.close)

    def _fetch(self, url: str) -> Iterator[bytes]:
        r = self._open(url, 0)
        return _closing(r.chunks, r.close)

    # -- resumable targets ----------------------------------------------------------
    def partial_path(self, url: str) -> Path:
        return self.partial_dir / (hashlib.sha256(url.encode()).hexdigest()[:40] + ".part")

    @contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO]:
        """Download ``url`` into its partial file (resuming) and yield it opened for reading.

        Raises:
            DownloadLengthMismatchError: more than ``max_length`` bytes (partial deleted).
            DownloadError, DownloadHTTPError: transport failures (partial kept for resuming).
        """
        if "/targets/" not in urlparse(url).path:
            with super().download_file(url, max_length) as f:  # metadata: small, in memory
                yield f
            return
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        part = self.partial_path(url)
        self._fill(url, part, max_length)
        f = open(part, "rb")
        try:
            yield f
        except exceptions.LengthOrHashMismatchError:
            f.close()
            part.unlink(missing_ok=True)  # never resume from bytes that failed verification
            raise
        finally:
            f.close()
        part.unlink(missing_ok=True)  # verified and copied out by ngclient

    def _fill(self, url: str, part: Path, max_length: int) -> None:
        have = part.stat().st_size if part.exists() else 0
        if have > max_length:
            part.unlink()
            have = 0
        if have == max_length and have:
            self.resumed_bytes += have
            return  # complete from an earlier run; ngclient re-checks length and hashes
        try:
            r = self._open(url, have)
        except exceptions.DownloadError:
            raise
        except Exception as e:
            raise exceptions.DownloadError(f"{url}: {e}") from e
        try:
            if r.status == 416 or (r.status == 206 and r.start != have):
                r.close()
                part.unlink(missing_ok=True)
                r, have = self._open(url, 0), 0
            mode = "ab" if (r.status == 206 and have) else "wb"
            if mode == "ab":
                self.resumed_bytes += have
            else:
                have = 0
            self._write(r, part, mode, have, max_length, url)
        finally:
            r.close()

    @staticmethod
    def _write(r: _Response, part: Path, mode: str, have: int, max_length: int, url: str) -> None:
        total = have
        with open(part, mode) as out:
            try:
                for chunk in r.chunks:
                    total += len(chunk)
                    if total > max_length:
                        out.close()
                        part.unlink(missing_ok=True)
                        raise exceptions.DownloadLengthMismatchError(
                            f"{url}: server sent more than the signed length of {max_length} bytes")
                    out.write(chunk)
            finally:
                if not out.closed:
                    out.flush()
                    os.fsync(out.fileno())


def _stream_http(r, url: str) -> Iterator[bytes]:
    import urllib3

    try:
        yield from r.stream(_CHUNK)
    except urllib3.exceptions.HTTPError as e:
        raise exceptions.DownloadError(f"{url}: connection broke off: {e}") from e


def _closing(chunks: Iterator[bytes], close) -> Iterator[bytes]:
    try:
        yield from chunks
    finally:
        close()
