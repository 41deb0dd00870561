"""Third-party output stays out of edgeship's progress: native (fd 2) and Python writes go to
the build's log file, edgeship's own lines to the console."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from toolchain.compat import capture_native_logs


def test_native_and_python_noise_go_to_the_log_and_progress_to_the_console(tmp_path: Path, capsys) -> None:
    log = tmp_path / "compile.log"
    with capture_native_logs(log) as cap:
        os.write(2, b"oneDNN: native noise on fd 2\n")
        os.write(1, b"absl: native noise on fd 1\n")
        print("Loading weights: 100%|#####|", file=sys.stderr)
        print("a library print", flush=True)
        cap.console.write("[  1.0s] progress line\n")
    text = log.read_text()
    assert "native noise on fd 2" in text and "native noise on fd 1" in text
    assert "Loading weights" in text and "a library print" in text
    out = capsys.readouterr()
    assert "progress line" in out.err and "Loading weights" not in out.err + out.out


def test_verbose_leaves_everything_on_the_console(tmp_path: Path, capsys) -> None:
    with capture_native_logs(tmp_path / "x.log", enabled=False) as cap:
        print("library line", file=sys.stderr)
        assert cap.path is None
    assert "library line" in capsys.readouterr().err and not (tmp_path / "x.log").exists()
