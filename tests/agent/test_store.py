"""Store: install/activate/rollback, GC rules, and crash safety with a really killed process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from device_agent.store import (
    KILL_ENV, BundleHashMismatchError, ModelNotInStoreError, NoPreviousModelError, Store,
)


def _store_with(tmp_path, bundles, *names):
    s = Store(tmp_path / "state")
    refs = [s.install_bundle(bundles[n].path) for n in names]
    return s, refs


def test_install_activate_rollback(tmp_path, bundles):
    s, (r1, r2) = _store_with(tmp_path, bundles, "v1", "v2")
    assert s.active() is None and s.previous() is None
    assert r1.sha256 == bundles["v1"].sha256 and r1.release == 1 and r1.name == "tiny"
    assert s.install_bundle(bundles["v1"].path) == r1  # idempotent
    s.activate(r1.sha256)
    s.activate(r2.sha256)
    assert (s.active(), s.previous()) == (r2, r1)
    s.activate(r2.sha256)  # already active: no-op, previous kept
    assert (s.active(), s.previous()) == (r2, r1)
    assert s.rollback() == r1
    assert (s.active(), s.previous()) == (r1, r2)
    assert s.verify(r1.sha256) == []
    model = s.model_path(r1.sha256)
    assert model.is_file() and not os.access(model, os.W_OK) or os.geteuid() == 0
    assert oct(model.stat().st_mode & 0o777) == oct(0o444)
    pointers = json.loads((tmp_path / "state" / "pointers.json").read_text())
    assert pointers["active"]["sha256"] == r1.sha256 and pointers["previous"]["sha256"] == r2.sha256


def test_errors_change_nothing(tmp_path, bundles):
    s, (r1,) = _store_with(tmp_path, bundles, "v1")
    with pytest.raises(NoPreviousModelError):
        s.rollback()
    s.activate(r1.sha256)
    with pytest.raises(NoPreviousModelError):
        s.rollback()
    with pytest.raises(ModelNotInStoreError):
        s.activate("0" * 64)
    with pytest.raises(BundleHashMismatchError):
        s.install_bundle(bundles["v2"].path, expected_sha256="f" * 64)
    assert s.active() == r1 and s.previous() is None
    assert [m.sha256 for m in s.models()] == [r1.sha256]


def test_gc_keeps_active_previous_and_in_use(tmp_path, bundles):
    s, (r1, r2, rp) = _store_with(tmp_path, bundles, "v1", "v2", "picker")
    assert s.gc() == sorted([r1.sha256, r2.sha256, rp.sha256])  # nothing active: all go
    s, (r1, r2, rp) = _store_with(tmp_path, bundles, "v1", "v2", "picker")
    s.activate(r1.sha256)
    s.activate(r2.sha256)
    assert s.gc(in_use={rp.sha256}) == []  # active, previous, in use
    assert s.gc() == [rp.sha256]
    assert {m.sha256 for m in s.models()} == {r1.sha256, r2.sha256}
    assert list((tmp_path / "state" / "tmp").iterdir()) == []


def test_leftovers_in_tmp_are_removed_and_never_counted(tmp_path, bundles):
    s, (r1,) = _store_with(tmp_path, bundles, "v1")
    half = tmp_path / "state" / "tmp" / f"{bundles['v2'].sha256}.dead"
    (half / "model").mkdir(parents=True)
    (half / "model.json").write_text("{}")
    (tmp_path / "state" / "models" / "not-a-sha").mkdir()
    assert [m.sha256 for m in s.models()] == [r1.sha256]
    Store(tmp_path / "state")  # a restart
    assert list((tmp_path / "state" / "tmp").iterdir()) == []


def _killed_install(state, bundle, point) -> int:
    code = ("import sys; from device_agent.store import Store; s = Store(sys.argv[1]); "
            "r = s.install_bundle(sys.argv[2]); s.activate(r.sha256)")
    env = dict(os.environ, **{KILL_ENV: point})
    return subprocess.run([sys.executable, "-c", code, str(state), str(bundle)], env=env, timeout=60).returncode


@pytest.mark.parametrize("point,new_active,new_stored", [
    ("store.unpacked", False, False),       # unpacked and checked in tmp/, not yet renamed
    ("store.installed", False, True),       # renamed into models/, pointers untouched
    ("store.before_switch", False, True),   # about to write pointers.json
    ("store.switched", True, True),         # pointers.json replaced
])
def test_crash_during_update_leaves_a_consistent_store(tmp_path, bundles, point, new_active, new_stored):
    s, (r1,) = _store_with(tmp_path, bundles, "v1")
    s.activate(r1.sha256)
    rc = _killed_install(tmp_path / "state", bundles["v2"].path, point)
    assert rc == -signal.SIGKILL
    after = Store(tmp_path / "state")  # restart
    want = bundles["v2"].sha256 if new_active else r1.sha256
    assert after.active().sha256 == want
    assert after.previous() == (r1 if new_active else None)
    stored = {m.sha256 for m in after.models()}
    assert stored == ({r1.sha256, bundles["v2"].sha256} if new_stored else {r1.sha256})
    assert sorted(p.name for p in (tmp_path / "state" / "models").iterdir()) == sorted(stored)
    assert list((tmp_path / "state" / "tmp").iterdir()) == []
    for sha in stored:
        assert after.verify(sha) == []
