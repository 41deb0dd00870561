"""Console helpers shared by toolchain commands: progress lines on stderr, plain-text tables.

Progress goes to stderr so that ``--json`` output on stdout stays machine-readable.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Sequence, TextIO

from runtime.cliutil import human_bytes  # noqa: F401  (shared with edgeship-agent; imported from here)


class Progress:
    """Timestamped progress lines: ``[  12.3s] step: detail``. ``quiet`` silences it."""

    def __init__(self, *, stream: TextIO | None = None, quiet: bool = False) -> None:
        self._stream = stream
        self._quiet = quiet
        self._t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self._quiet:
            return
        stream = self._stream or sys.stderr
        stream.write(f"[{time.perf_counter() - self._t0:7.1f}s] {message}\n")
        stream.flush()

    def warn(self, message: str) -> None:
        """Warnings print even when quiet."""
        stream = self._stream or sys.stderr
        stream.write(f"WARNING: {message}\n")
        stream.flush()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, align: str | None = None) -> str:
    """A plain-text table. ``align`` is one char per column, ``l`` or ``r`` (default: left)."""
    cells = [[_cell(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    align = align or "l" * len(headers)

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(vals, widths, align)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(headers)), sep] + [line(r) for r in cells])


def _cell(v: Any) -> str:
    return "-" if v is None else str(v)


def fmt_float(v: float | None, spec: str = ".3g") -> str | None:
    return None if v is None else format(v, spec)


def fmt_pct(v: float | None) -> str | None:
    return None if v is None else f"{100 * v:.2f}%"


class _StdStream:
    """The process's current ``sys.stdout``/``sys.stderr``, looked up at each write.

    Use as a parameter default: ``sys.stderr`` written as a default is bound once, at import,
    and misses a later swap (pytest's capture, a redirect by the caller).
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def write(self, s: str) -> int:
        return getattr(sys, self._name).write(s)

    def flush(self) -> None:
        getattr(sys, self._name).flush()


STDOUT = _StdStream("stdout")
STDERR = _StdStream("stderr")
