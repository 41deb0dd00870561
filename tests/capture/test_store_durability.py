"""The capture store's removals, short writes, disk bound and pull race on real files: a removed
capture stays removed after a crash (a real SIGKILL) or a power cut at the index write, a disk
full write loses nothing listed, the files stay within the disk budget, a pull racing an
eviction reports the capture skipped (not tampered), and a malformed index is a clear error."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from device_agent.capture import indexfile, segfile
from device_agent.capture.pull import PullServer
from device_agent.capture.store import CaptureStore
from runtime.contracts.capture import fileformat as ff
from runtime.contracts.capture import pull as proto
from runtime.contracts.capture.rules import CaptureRule

sys.path.insert(0, str(Path(__file__).parent))
from capturehelpers import host_capture, segment_records  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RULES = {"s": CaptureRule(name="s", rate=1.0, max_count=100000)}


def _store(root, n=3, **kw):
    store = CaptureStore(root, disk_budget_bytes=kw.pop("budget", 1 << 30), index_interval_s=0.0, **kw)
    for i in range(n):
        assert store.put(host_capture(i, "d"), rules=RULES) is None
    store.flush_index(force=True)
    return store


class PowerCut:
    """What survives a power cut: each segment as of its last fsync, the segments the directory
    held at its last fsync (from the moment of ``__init__``, when everything is durable)."""

    def __init__(self, root: Path, monkeypatch) -> None:
        self.root = root
        self.durable = {p.name: p.read_bytes() for p in root.glob("*.seg")}
        self.listing = set(self.durable)
        real = os.fsync

        def fsync(fd):
            real(fd)
            path = Path(os.readlink(f"/proc/self/fd/{fd}"))
            if path == root:
                self.listing = {p.name for p in root.glob("*.seg")}
            elif path.suffix == ".seg" and path.parent == root:
                self.durable[path.name] = path.read_bytes()

        monkeypatch.setattr(os, "fsync", fsync)

    def now(self) -> None:
        for p in self.root.glob("*.seg"):
            p.unlink()
        for name in self.listing:
            if name in self.durable:
                (self.root / name).write_bytes(self.durable[name])


class Died(Exception):
    pass


@pytest.mark.parametrize("removed", [2, 3])  # some of a segment's captures, all of them (the segment goes)
def test_a_removed_capture_stays_removed_after_a_power_cut_right_after_the_index_write(tmp_path, monkeypatch,
                                                                                       removed):
    root = tmp_path / "cap"
    store = _store(root)
    ids = [e.meta.id for e in store.entries()]
    cut = PowerCut(root, monkeypatch)
    real = indexfile.IndexWriter.write

    def write_then_die(self, **kw):  # the index without them is durable, then the power goes
        real(self, **kw)
        raise Died()

    monkeypatch.setattr(indexfile.IndexWriter, "write", write_then_die)
    with pytest.raises(Died):
        store.remove(ids[:removed])
    monkeypatch.undo()
    cut.now()
    again = CaptureStore(root, disk_budget_bytes=1 << 30)
    assert [e.meta.id for e in again.entries()] == ids[removed:] and again.counters.adopted == 0
    assert segment_records(root)[0] == 3 - removed  # and what is left of them is zeros


_KILLED = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from capturehelpers import host_capture
    from device_agent.capture import indexfile
    from device_agent.capture.store import CaptureStore
    from runtime.contracts.capture.rules import CaptureRule
    rules = {"s": CaptureRule(name="s", rate=1.0)}
    store = CaptureStore(sys.argv[1], disk_budget_bytes=1 << 30, index_interval_s=0.0)
    for i in range(3):
        store.put(host_capture(i, "d"), rules=rules)
    store.flush_index(force=True)
    real = indexfile.IndexWriter.write
    def write(self, **kw):
        real(self, **kw)
        if kw["removed"]:
            os.kill(os.getpid(), signal.SIGKILL)  # the index without them is written: killed right then
    indexfile.IndexWriter.write = write
    store.remove([e.meta.id for e in store.entries()][:int(sys.argv[3])])
""")


@pytest.mark.parametrize("removed", [2, 3])
def test_a_process_killed_right_after_the_index_write_of_a_removal_does_not_bring_them_back(tmp_path, removed):
    root = tmp_path / "cap"
    p = subprocess.run([sys.executable, "-c", _KILLED, str(root), str(Path(__file__).parent), str(removed)],
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, timeout=60)
    assert p.returncode == -9, p.stderr.decode()
    again = CaptureStore(root, disk_budget_bytes=1 << 30)
    assert len(again.entries()) == 3 - removed and again.counters.adopted == 0
    assert len(list(ff.load_set(root))) == 3 - removed


_FULL = textwrap.dedent("""
    import resource, signal, sys
    sys.path.insert(0, sys.argv[2])
    from capturehelpers import host_capture
    from device_agent.capture.store import CaptureStore
    from runtime.contracts.capture.rules import CaptureRule
    rules = {"s": CaptureRule(name="s", rate=1.0)}
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the file size limit: a short write, then EFBIG
    store = CaptureStore(sys.argv[1], disk_budget_bytes=1 << 30, index_interval_s=0.0)
    store.put(host_capture(0, "d"), rules=rules)
    store.flush_index(force=True)
    seg = store.entries()[0].segment
    size = (store.root / seg).stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + size // 2, hard))  # the disk fills mid-record
    try:
        store.put(host_capture(1, "d"), rules=rules)
        print("no error")
    except OSError as e:
        print("refused:", e)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again
    for i in range(2, 5):
        store.put(host_capture(i, "d"), rules=rules)
    store.flush_index(force=True)
    print(len(store.entries()))
""")


def test_a_short_write_when_the_disk_fills_loses_no_listed_capture(tmp_path):
    root = tmp_path / "cap"
    p = subprocess.run([sys.executable, "-c", _FULL, str(root), str(Path(__file__).parent)],
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, timeout=60, text=True)
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    assert out[0].startswith("refused:") and "short write" in out[0] and out[1] == "4"
    again = CaptureStore(root, disk_budget_bytes=1 << 30)  # the next start: all four listed ones
    assert [e.meta.id[-4:] for e in again.entries()] == ["0000", "0002", "0003", "0004"]
    assert len(list(ff.load_set(root))) == 4 and segment_records(root) == (4, 0)


def test_a_write_that_fails_after_writing_half_is_cut_off_again(tmp_path, monkeypatch):
    root = tmp_path / "cap"
    store = _store(root, n=1)
    real = os.write

    def half_then_enospc(fd, data):
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segfile.os, "write", half_then_enospc)
    with pytest.raises(OSError, match="No space"):
        store.put(host_capture(1, "d"), rules=RULES)
    monkeypatch.undo()
    for i in range(2, 4):
        assert store.put(host_capture(i, "d"), rules=RULES) is None
    store.close()
    again = CaptureStore(root, disk_budget_bytes=1 << 30)
    assert [e.meta.id[-4:] for e in again.entries()] == ["0000", "0002", "0003"]
    assert segment_records(root) == (3, 0)


def test_the_files_stay_within_the_disk_budget_through_evictions_and_pulls(tmp_path):
    root = tmp_path / "cap"
    budget = 256 << 10
    rules = {"s": CaptureRule(name="s", rate=1.0, max_count=100000),
             "e": CaptureRule(name="e", rate=1.0, max_count=40, priority=1)}
    store = CaptureStore(root, disk_budget_bytes=budget, index_interval_s=0.0)
    slack = indexfile.JOURNAL_MIN_BYTES  # the journal may reach 64 KiB before a new snapshot
    worst = 0
    for i in range(1200):
        store.put(host_capture(i, "d", n=8, rule="e" if i % 5 == 0 else "s"), rules=rules)
        if i % 20 == 0:
            store.flush_index(force=True)
        if i % 150 == 149:  # a pull takes some (oldest first) in the middle of it
            store.remove([e.meta.id for e in store.entries()][::3][:10])
        files = list(root.iterdir())
        worst = max(worst, sum(p.stat().st_size for p in files))
        assert sum(p.stat().st_blocks * 512 for p in files) <= budget + slack + 4096 * len(files)
        assert sum(p.stat().st_size for p in root.glob("*.seg")) <= budget
    assert sum(p.stat().st_size for p in root.glob("*.seg")) <= store.usage()["disk_bytes"] <= budget
    assert worst > budget * 0.6  # it did fill up
    assert store.counters.evicted["s"] > 500 and store.counters.refused["disk_budget"] == 0
    assert {e.meta.rule for e in store.entries()} == {"s", "e"}
    store.close()
    assert len(list(ff.load_set(root))) == len(CaptureStore(root, disk_budget_bytes=budget).entries())


@pytest.mark.parametrize("rest", [0, 1])  # the whole segment goes (the file is unlinked) / the record is zeroed
def test_a_pull_racing_an_eviction_reports_the_capture_skipped_not_tampered(tmp_path, rest):
    root = tmp_path / "cap"
    rules = {"s": CaptureRule(name="s", rate=1.0, max_count=2)}
    store = CaptureStore(root, disk_budget_bytes=1 << 30, index_interval_s=0.0)
    for i in range(2):
        store.put(host_capture(i, "d"), rules=rules)
    store.flush_index(force=True)
    sent = []

    def publish(_level, body):
        sent.append(body)
        if body["type"] == proto.DataType.OFFER.value:  # the writer evicts the oldest offered meanwhile
            for i in range(5, 5 + 1 + rest):
                store.put(host_capture(i, "d"), rules=rules)
        return None

    server = PullServer(store, publish=publish, fleet="lab", device="d")
    server._round(proto.PullRequest(pull_id="p1"), threading.Event())
    done = sent[-1]
    assert done["type"] == "done" and not done["failed"]
    assert set(done["skipped"]) == {e["id"] for e in sent[0]["files"]} - {e.meta.id for e in store.entries()}
    assert len(done["skipped"]) == 1 + rest and done["sent"] == 1 - rest
    assert all(v == "evicted meanwhile" for v in done["skipped"].values())


def test_a_capture_read_while_still_stored_is_returned_and_a_lost_file_is_an_error(tmp_path):
    root = tmp_path / "cap"
    store = _store(root, n=2)
    e = store.entries()[0]
    assert ff.verify_entry(e, store.read_stored(e)) is None
    (root / e.segment).unlink()
    with pytest.raises(OSError):
        store.read_stored(e)


@pytest.mark.parametrize("doc", [b"{}", b'{"files": []}', b'{"schema": 2, "files": []}'])
def test_an_index_without_a_schema_is_a_format_error_and_the_store_rebuilds(tmp_path, doc):
    with pytest.raises(ff.CaptureFormatError, match="not a capture-set index"):
        ff.CaptureIndex.from_bytes(doc, where="index.json")
    root = tmp_path / "cap"
    _store(root, n=2).close()
    (root / ff.INDEX).write_bytes(doc)
    assert len(CaptureStore(root, disk_budget_bytes=1 << 30).entries()) == 2  # rebuilt from the files
    assert (root / "index.json.corrupt").read_bytes() == doc


def test_a_journal_removing_a_non_string_id_is_a_format_error(tmp_path):
    root = tmp_path / "cap"
    _store(root, n=1).close()
    index = ff.read_index(root)
    (root / index.journal).write_bytes(b'{"remove":[["a"]]}\n')
    with pytest.raises(ff.CaptureFormatError, match=r"line 1: expected .*id strings"):
        ff.read_index(root)
    assert len(CaptureStore(root, disk_budget_bytes=1 << 30).entries()) == 1


def test_the_ring_evicts_the_oldest_first_when_adopted_standalone_files_are_older(tmp_path):
    root = tmp_path / "cap"
    rules = {"s": CaptureRule(name="s", rate=1.0, max_count=3)}
    store = CaptureStore(root, disk_budget_bytes=1 << 30, index_interval_s=0.0)
    for i in (5, 6):
        store.put(host_capture(i, "d"), rules=rules)
    store.close()
    old = host_capture(1, "d")  # an older agent's standalone file, not in the index: adopted at start
    (root / f"{old.meta.id}.npz").write_bytes(ff.encode(old))
    store = CaptureStore(root, disk_budget_bytes=1 << 30, index_interval_s=0.0)
    assert store.counters.adopted == 1
    store.put(host_capture(7, "d"), rules=rules)  # the ring evicts one: the oldest, the adopted file
    assert [e.meta.id[-4:] for e in store.entries()] == ["0005", "0006", "0007"]
    store.close()
