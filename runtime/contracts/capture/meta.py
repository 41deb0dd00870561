"""The metadata of one capture (:class:`CaptureMeta`): the ``__meta__`` of its ``.npz`` and
the ``meta`` of its index entry (runtime.contracts.capture.fileformat documents the format). Pure."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ContractError

CAPTURE_SCHEMA = "edgeship.capture/1"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LAYOUTS = ("batch", "whole")


class CaptureFormatError(ContractError):
    """A capture file or capture-set index does not follow the format (the message names it)."""


# ---------------------------------------------------------------------------- meta
_META_FIXED: dict[tuple, str] = {}


def jstr(s: str) -> str:
    """A JSON string literal (plain printable ASCII without quotes or backslashes as is)."""
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return f'"{s}"'
    return json.dumps(s)


@dataclass(frozen=True)
class CaptureMeta:
    id: str
    ts_ms: int
    fleet: str
    device: str
    model: Mapping[str, Any]     # {"name", "version", "release", "sha256"} of the model that served it
    rule: str                    # the rule it is counted against (highest priority of those that fired)
    trigger: str
    rules: tuple[str, ...]       # every rule that fired
    samples: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    labels: bool
    layout: str
    score: float | None = None   # low_confidence: the lowest top-1 probability; drift: its contribution
    error: str | None = None     # error: what the engine said

    def to_json(self) -> dict[str, Any]:
        return {"schema": CAPTURE_SCHEMA, "id": self.id, "ts_ms": self.ts_ms, "fleet": self.fleet,
                "device": self.device, "model": dict(self.model), "rule": self.rule, "trigger": self.trigger,
                "rules": list(self.rules), "samples": self.samples, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "labels": self.labels, "layout": self.layout,
                "score": self.score, "error": self.error}

    def to_text(self) -> str:
        """:meth:`to_json` as compact JSON text (keys in another order): the fields a model's
        captures share are serialised once per model and rule (the writer's hot path)."""
        key = (self.fleet, self.device, tuple(self.model.items()), self.rule, self.trigger, self.rules, self.inputs,
               self.outputs, self.labels, self.layout)
        try:
            fixed = _META_FIXED.get(key)
        except TypeError:  # a model field that is not hashable: no cache
            fixed = None
        if fixed is None:
            d = self.to_json()
            for k in ("id", "ts_ms", "samples", "score", "error"):
                del d[k]
            fixed = json.dumps(d, separators=(",", ":"))[1:-1]
            if len(_META_FIXED) < 256:
                try:
                    _META_FIXED[key] = fixed
                except TypeError:
                    pass
        score = "null" if self.score is None else json.dumps(self.score)
        error = "null" if self.error is None else json.dumps(self.error)
        return (f'{{"id":{jstr(self.id)},"ts_ms":{int(self.ts_ms)},"samples":{int(self.samples)},'
                f'"score":{score},"error":{error},{fixed}}}')

    @classmethod
    def from_json(cls, d: Any, *, where: str) -> "CaptureMeta":
        """Raises CaptureFormatError naming ``where`` and the key."""
        keys = set(cls("x", 0, "", "", {}, "", "", (), 1, (), (), False, "batch").to_json())
        if not isinstance(d, dict) or set(d) != keys:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise CaptureFormatError(f"{where}: capture meta must have exactly the keys {sorted(keys)}, got {got}")
        if d["schema"] != CAPTURE_SCHEMA:
            raise CaptureFormatError(f"{where}: schema {d['schema']!r} is not {CAPTURE_SCHEMA!r}")
        model = d["model"]
        if not isinstance(model, dict) or not {"name", "release", "sha256"} <= set(model):
            raise CaptureFormatError(f"{where}.model: needs name, release and sha256")
        if not isinstance(d["id"], str) or not _ID.match(d["id"]):
            raise CaptureFormatError(f"{where}.id: {d['id']!r} is not a capture id")
        if d["layout"] not in _LAYOUTS:
            raise CaptureFormatError(f"{where}.layout: {d['layout']!r} is not one of {list(_LAYOUTS)}")
        for k in ("ts_ms", "samples"):
            if isinstance(d[k], bool) or not isinstance(d[k], int) or d[k] < (1 if k == "samples" else 0):
                raise CaptureFormatError(f"{where}.{k}: expected a positive integer, got {d[k]!r}")
        for k in ("rules", "inputs", "outputs"):
            if not isinstance(d[k], list) or not all(isinstance(x, str) for x in d[k]):
                raise CaptureFormatError(f"{where}.{k}: expected a list of names")
        if not isinstance(d["labels"], bool) or not (d["score"] is None or isinstance(d["score"], (int, float))):
            raise CaptureFormatError(f"{where}: labels must be true/false and score a number or null")
        return cls(id=d["id"], ts_ms=d["ts_ms"], fleet=str(d["fleet"]), device=str(d["device"]), model=dict(model),
                   rule=str(d["rule"]), trigger=str(d["trigger"]), rules=tuple(d["rules"]), samples=d["samples"],
                   inputs=tuple(d["inputs"]), outputs=tuple(d["outputs"]), labels=d["labels"], layout=d["layout"],
                   score=None if d["score"] is None else float(d["score"]),
                   error=None if d["error"] is None else str(d["error"]))


