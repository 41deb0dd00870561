"""fsutil.atomic_write_bytes: permissions of the file it puts in place."""

from __future__ import annotations

import os
import stat

from runtime.fsutil import atomic_write_bytes


def test_mode_is_set_before_the_file_appears_and_default_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        secret, plain = tmp_path / "control.token", tmp_path / "agent.json"
        atomic_write_bytes(secret, b"s3cret", mode=0o600)
        atomic_write_bytes(plain, b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.read_bytes() == b"s3cret"
    assert stat.S_IMODE(plain.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.json", "control.token"]  # no temp left


def test_atomic_file_appears_whole_or_not_at_all(tmp_path):
    import pytest

    from runtime.fsutil import AtomicFile

    target = tmp_path / "bundle.tar"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with AtomicFile(tmp_path, mode=0o644) as f:
            f.file.write(b"half of the new")
            raise RuntimeError("the writer died")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["bundle.tar"]
    with AtomicFile(tmp_path, mode=0o640) as f:
        f.file.write(b"new")
        f.sync()
        assert f.temp_path.read_bytes() == b"new" and target.read_bytes() == b"old"  # named only on commit
        assert f.commit(target) == target
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.tar"]
    with pytest.raises(ValueError, match="stays in"):
        with AtomicFile(tmp_path) as f:
            f.commit(tmp_path / "elsewhere" / "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.tar"]
