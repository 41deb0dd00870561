"""A full disk during an update, on a small real file system (a 4 MiB tmpfs holding the state dir):
the preflight from the signed length refuses before downloading; a disk that fills while
downloading or unpacking ends the update with the typed update.disk_full, the partial files
removed and the journal finished; once space is freed the same Updater updates (no restart)."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from device_agent.ota import Reason, State
from device_agent.ota.errors import DiskFullError

from .conftest import build_env

SIZE = 4 << 20


class _Throttled:
    """A repository handler that sends bundles in 32 KiB pieces, 10 ms apart (a slow link)."""

    @staticmethod
    def make():
        from toolchain.ota.serve import RepoRequestHandler

        class Throttled(RepoRequestHandler):
            def copyfile(self, source, outputfile):
                if "/targets/" not in self.path:
                    return super().copyfile(source, outputfile)
                for block in iter(lambda: source.read(32 << 10), b""):
                    outputfile.write(block)
                    time.sleep(0.01)
        return Throttled


@pytest.fixture
def small(tmp_path):
    dev = tmp_path / "device"
    dev.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0755", "tmpfs", str(dev)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or r.returncode}); "
                    f"the disk-full tests need a real small file system")
    e = build_env(tmp_path, handler=_Throttled.make())
    try:
        yield e
    finally:
        e.server.shutdown()
        e.server.server_close()
        subprocess.run(["umount", "-l", str(dev)], capture_output=True)


def _fill(path) -> None:
    """Take every free byte of the file system holding ``path``."""
    with open(path, "wb") as f:
        block = b"\0" * (64 << 10)
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError:
            pass
        for n in (4096, 512, 1):  # the last pages too
            try:
                while True:
                    f.write(b"\0" * n)
                    f.flush()
            except OSError:
                pass


def _nothing_left(e, sha: str | None = None) -> None:
    partial = e.state / "update" / "downloads" / "partial"
    assert not partial.exists() or list(partial.iterdir()) == []
    if sha:
        assert not (e.state / "update" / "downloads" / f"{sha}.tar").exists()
    assert list((e.state / "tmp").iterdir()) == []


def test_preflight_refuses_before_downloading(small):
    pub = small.publish(small.bundle(release=2, kind="good2", pad_bytes=3 << 20))
    store, agent, up = small.device()
    before = small.snapshot()
    small.server.requests.clear()
    res = up.update("m")
    assert res.state is State.FAILED and res.reason is Reason.DISK_FULL, res
    err = up.last_error
    assert isinstance(err, DiskFullError) and err.needed_bytes > err.free_bytes
    assert err.needed_bytes >= 2 * pub.length and "nothing was downloaded" in str(err)
    assert not any("/targets/" in p for p, _ in small.server.requests)  # not one byte of the bundle
    assert up.last().finished and small.snapshot() == before
    _nothing_left(small, pub.sha256)
    agent.close()


def test_disk_full_while_downloading_then_update_once_space_is_freed(small):
    pub = small.publish(small.bundle(release=2, kind="good2", pad_bytes=640 << 10))
    store, agent, up = small.device()
    filler = small.state / "filler"
    partial = small.state / "update" / "downloads" / "partial"

    def fill_when_the_download_starts():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if partial.is_dir() and any(p.stat().st_size > 0 for p in partial.glob("*.part")):
                return _fill(filler)
            time.sleep(0.002)
    t = threading.Thread(target=fill_when_the_download_starts)
    t.start()
    res = up.update("m")
    t.join()
    assert res.state is State.FAILED and res.reason is Reason.DISK_FULL, res
    assert "disk full while in fetch" in res.detail and isinstance(up.last_error, DiskFullError)
    assert up.last().finished and up.last().reason is Reason.DISK_FULL
    _nothing_left(small, pub.sha256)
    assert store.active().release == 1 and agent.current().ref.release == 1
    os.unlink(filler)  # room again: the same Updater runs the next update, no restart
    res = up.update("m")
    assert res.state is State.COMMIT, res
    assert store.active().sha256 == pub.sha256 and agent.current().ref.sha256 == pub.sha256
    agent.close()


def test_disk_full_while_unpacking_then_update_once_space_is_freed(small):
    pub = small.publish(small.bundle(release=2, kind="good2", pad_bytes=640 << 10))
    store, agent, up = small.device()
    filler = small.state / "filler"

    def on_event(ev):
        if ev.state == "stage" and not filler.exists():
            _fill(filler)  # the download is complete; the unpack finds no room
    res = up.update("m", on_event=on_event)
    assert res.state is State.FAILED and res.reason is Reason.DISK_FULL, res
    assert "disk full while in stage" in res.detail
    err = up.last_error
    assert err.free_bytes < err.needed_bytes
    _nothing_left(small, pub.sha256)
    assert pub.sha256 not in {r.sha256 for r in store.models()} and store.active().release == 1
    os.unlink(filler)
    res = up.update("m")
    assert res.state is State.COMMIT, res
    assert agent.current().ref.sha256 == pub.sha256
    agent.close()
