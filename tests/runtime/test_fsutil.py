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
