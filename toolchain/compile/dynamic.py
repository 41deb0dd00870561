"""Dynamic dims that stay dynamic: probe sizes, specialization reports, torch guard capture.

A dim declared dynamic (``--dynamic-axis``, a factory's ``dynamic_axes``, a symbolic dim of
an ONNX source) must work at sizes other than the example's in every artifact that claims it.
The pipeline checks that with a *probe*: the validation samples wrapped or cut to a second
size along every dynamic dim (:func:`probe_candidates`), run on the reference and on each
artifact with that dim dynamic. When the exported graph does not honour a dim, the build
stops with a :class:`SpecializationError` that names the dim, the value it was fixed to and,
where torch says it, the source line (:class:`GuardLog` records torch's shape guards with the
user's frame), unless the user allowed it static (``--allow-static``).

Pure apart from :class:`GuardLog` (which hooks a logger while an export runs).
"""

from __future__ import annotations

import logging
import re
import traceback
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from runtime.spec import TensorSpec, contiguous, is_dynamic, tie_name
from toolchain.compile.samples import Arrays, Layout, count, resize_axis
from toolchain.errors import ExportError

#: samples a probe runs (several at once where the batch is dynamic: a second batch size)
PROBE_SAMPLES = 8


@dataclass(frozen=True)
class DimRef:
    """One dynamic dim of one input; ``key`` ties same-named dims (``seq``) across inputs."""

    input: str
    axis: int
    name: str | None
    batch: bool = False

    @property
    def key(self) -> str:
        return self.name or f"{self.input}:{self.axis}"

    @property
    def label(self) -> str:
        return f"{self.input}:{self.axis}" + (f" ({self.name!r})" if self.name else "")

    def matches(self, allowed: str) -> bool:
        """``--allow-static`` names a dim by name (``width``) or by ``input:axis``."""
        return allowed in (self.name, f"{self.input}:{self.axis}")


def dynamic_dims(inputs: Sequence[TensorSpec], layout: Layout) -> list[DimRef]:
    out = []
    for s in inputs:
        for axis, d in enumerate(s.shape):
            if is_dynamic(d):
                out.append(DimRef(s.name, axis, tie_name(d), batch=axis == layout.axis(s.name)))
    return out


@dataclass(frozen=True)
class Probe:
    """Validation samples at other sizes: ``sizes``/``base`` by dim key (batch dims: samples per run)."""

    sizes: Mapping[str, int]
    base: Mapping[str, int]
    arrays: Arrays
    changed: tuple[DimRef, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.sizes.items()) or "the example sizes"


def second_size(n: int, *, up: bool) -> int:
    """Another size that keeps the divisibility of ``n`` by powers of two (strides, pooling):
    ``n + p`` (up) or ``n - p/2`` (down), ``p`` the largest power of two dividing ``n``."""
    p = n & -n if n > 0 else 1
    if up:
        return n + min(p, max(n, 1))
    return n - p // 2 if p > 1 else max(1, n - 1) if n > 1 else 2


def probe_candidates(stored: Mapping[str, np.ndarray], inputs: Sequence[TensorSpec], layout: Layout, *,
                     only: Sequence[str] | None = None) -> list[Probe]:
    """Probes at larger, then smaller, sizes of every dynamic dim (or only the dims keyed in ``only``).

    Empty when the model has no dynamic dim. Batch dims change by running two samples at once.
    """
    dims = [d for d in dynamic_dims(inputs, layout) if only is None or d.key in only]
    if not dims:
        return []
    base = {d.key: 1 if d.batch else _stored_size(stored, layout, d) for d in dims}
    out = []
    for up in (True, False):
        sizes = {k: PROBE_SAMPLES if _is_batch(dims, k) else second_size(n, up=up) for k, n in base.items()}
        if out and sizes == out[0].sizes:
            break
        out.append(Probe(sizes=sizes, base=base, arrays=_resized(stored, inputs, layout, dims, sizes),
                         changed=tuple(dims)))
    return out


def _is_batch(dims: Sequence[DimRef], key: str) -> bool:
    return any(d.batch for d in dims if d.key == key)


def _stored_size(stored, layout: Layout, d: DimRef) -> int:
    b = layout.axis(d.input)
    axis = d.axis if b is None else d.axis - (1 if d.axis > b else 0)
    return int(stored[d.input].shape[axis + 1])


def _resized(stored, inputs, layout: Layout, dims: Sequence[DimRef], sizes: Mapping[str, int]) -> Arrays:
    n = count(stored)
    take = np.arange(PROBE_SAMPLES) % n
    out = {}
    for s in inputs:
        a = np.asarray(stored[s.name])[take]
        b = layout.axis(s.name)
        for d in dims:
            if d.input != s.name or d.batch:
                continue
            axis = d.axis if b is None else d.axis - (1 if d.axis > b else 0)
            a = resize_axis(a, axis + 1, sizes[d.key])
        out[s.name] = contiguous(a)
    return out


# -- reports ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Specialized:
    """A declared-dynamic dim the export does not honour."""

    dim: DimRef
    value: int | None = None  # the size it was fixed to, where known
    where: str | None = None  # the user's source line that fixed it, where torch says it
    detail: str = ""  # what showed it (torch's message, or the engine's error at another size)


class SpecializationError(ExportError):
    """A dim declared dynamic is fixed in the exported graph (names dim, value, source line)."""

    def __init__(self, spec: str, found: Sequence[Specialized]) -> None:
        self.found = tuple(found)
        parts = []
        for f in self.found:
            msg = f"dynamic dim {f.dim.label} is not dynamic in the export"
            if f.value is not None:
                msg += f": it was fixed to the example's {f.value}"
            if f.where:
                msg += f" at {f.where}"
            if f.detail:
                msg += f" ({f.detail})"
            parts.append(msg)
        keys = ", ".join(dict.fromkeys(f"--allow-static {f.dim.key}" for f in self.found))
        super().__init__(f"{spec}: " + "; ".join(parts) + f". Make that code shape-generic (no Python ints "
                         f"taken from the example's shape), or pass {keys} to build it static")


def parse_export_conflicts(text: str) -> list[tuple[str, int, int]]:
    """``(forward argument or input, axis, value)`` from torch.export's "inferred a static shape"
    and "specialized it to be a constant" messages."""
    out = []
    for m in re.finditer(r"static shape of (\d+) for dimension inputs\['([^']+)'\]\.shape\[(\d+)\]", text):
        out.append((m.group(2), int(m.group(3)), int(m.group(1))))
    return out


class GuardLog(logging.Handler):
    """Torch's shape guards and symbols during an export, each with the user's frame.

    ``symbols`` maps a symbol (``s0``) to ``(argument, axis)``; ``guards`` holds
    ``(expression, where)`` for every guard added. Use as a context manager.
    """

    LOGGER = "torch.fx.experimental.symbolic_shapes"

    def __init__(self, *, user_files: Sequence[str] = ()) -> None:
        super().__init__(logging.INFO)
        self.symbols: dict[str, tuple[str, int]] = {}
        self.guards: list[tuple[str, str | None]] = []
        self._user_files = tuple(user_files)

    def __enter__(self) -> "GuardLog":
        lg = logging.getLogger(self.LOGGER)
        self._saved = (lg.level, lg.propagate, list(lg.handlers))
        lg.setLevel(logging.INFO)
        lg.propagate = False  # torch's own handlers would print every guard to stderr
        for h in self._saved[2]:
            lg.removeHandler(h)
        lg.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        lg = logging.getLogger(self.LOGGER)
        lg.removeHandler(self)
        for h in self._saved[2]:
            lg.addHandler(h)
        lg.setLevel(self._saved[0])
        lg.propagate = self._saved[1]

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record must never break the export
            return
        m = re.search(r"create_symbol (\w+) = \d+ for L\['(\w+)'\](?:\[(\d+)\])?\.size\(\)\[(\d+)\]", msg)
        if m:
            arg = m.group(3) if m.group(2) in ("flat_args", "args") and m.group(3) else m.group(2)
            self.symbols.setdefault(m.group(1), (arg, int(m.group(4))))
            return
        m = re.search(r"(?:eval|runtime_assert) (?:\[guard suppressed\] )?(.+?) \[guard added\]", msg)
        if m:
            self.guards.append((m.group(1), self._user_frame()))

    def _user_frame(self) -> str | None:
        frames = [f for f in traceback.extract_stack()[:-2] if _is_user(f.filename, self._user_files)]
        if not frames:
            return None
        f = frames[-1]
        return f"{f.filename}:{f.lineno} in {f.name}" + (f": {f.line.strip()}" if f.line else "")

    def where(self, arg_names: Sequence[str], dim: DimRef, index: int) -> str | None:
        """The user line of the first equality guard on ``dim``'s symbol (matched by argument
        name or position ``index``), or None."""
        syms = [s for s, (arg, axis) in self.symbols.items()
                if axis == dim.axis and (arg in arg_names or arg == str(index))]
        for expr, where in self.guards:
            if where and expr.startswith("Eq(") and any(re.search(rf"\b{s}\b", expr) for s in syms):
                return where
        return None


def _is_user(filename: str, user_files: Sequence[str]) -> bool:
    if user_files:
        return any(filename.endswith(u) or filename == u for u in user_files)
    return ("site-packages" not in filename and "/lib/python3" not in filename
            and "/toolchain/" not in filename and "/runtime/" not in filename and not filename.startswith("<"))
