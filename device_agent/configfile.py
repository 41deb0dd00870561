"""The one strict loader (and writer) of the agent's TOML configuration tables.

Every section, the agent's own (``[agent]``, ``[serving]``) and the registered ones
(``[update]``, ``[mqtt]``), is a frozen dataclass whose fields carry their documentation
(:func:`doc`). :func:`load_table` builds one from a parsed TOML table and refuses unknown
keys, wrong types and unknown enum values, naming the file, the section and the key;
:func:`dump_table` writes one back with each field's documentation as a comment.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import textwrap
import typing
from dataclasses import field
from typing import Any

from runtime.errors import ExitCode

from .errors import DeviceAgentError


class ConfigError(DeviceAgentError, ValueError):
    """The config file is missing, not TOML, or has an unknown key or a wrong value."""

    exit_code = ExitCode.BAD_INPUT


def doc(text: str, default: Any = dataclasses.MISSING, **kw) -> Any:
    """A dataclass field with its documentation (written as a comment by :func:`dump_table`)."""
    if default is dataclasses.MISSING:
        return field(metadata={"doc": text}, **kw)
    return field(default=default, metadata={"doc": text}, **kw)


# --------------------------------------------------------------------------- reading
def load_table(cls, data: Any, where: str, *, error: type[ConfigError] = ConfigError):
    """Strictly build the frozen dataclass ``cls`` from a parsed TOML table: unknown keys,
    wrong types and values outside an enum are refused, naming ``where`` and the key.

    Raises:
        ``error`` (a ConfigError): naming the key; the section's own checks (``__post_init__``)
            raise their ConfigError, prefixed with the file.
    """
    if not isinstance(data, dict):
        raise error(f"{where}: expected a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        from runtime.contracts.bundle._strict import unknown_hint

        raise error(f"{where}: unknown key(s) {unknown}{unknown_hint(unknown, set(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where} {key}", error)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required key with no default
        raise error(f"{where}: {e}") from e
    except ConfigError as e:  # the section's own checks name the key ("[mqtt] fleet ..."): add the file
        if ": [" not in where:  # no file: the table alone (MqttConfig.from_mapping)
            raise
        raise type(e)(f"{where.split(': [', 1)[0]}: {e}") from e


def _coerce(tp: Any, v: Any, where: str, error: type[ConfigError]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return load_table(tp, v, where, error=error)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(v)
        except ValueError:
            raise error(f"{where}: {v!r} is not one of {[e.value for e in tp]}") from None
    if tp is bool:
        if not isinstance(v, bool):
            raise error(f"{where}: expected true or false, got {v!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise error(f"{where}: expected an integer, got {v!r}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise error(f"{where}: expected a number, got {v!r}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise error(f"{where}: expected a string, got {v!r}")
        return v
    if origin in (tuple, list):
        (inner, *_rest) = typing.get_args(tp) or (Any,)
        if not isinstance(v, list):
            raise error(f"{where}: expected a list, got {v!r}")
        return tuple(_coerce(inner, x, f"{where}[{i}]", error) for i, x in enumerate(v))
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        errors = []
        for a in args:
            try:
                return _coerce(a, v, where, error)
            except ConfigError as e:
                errors.append(str(e))
        raise error(errors[0] if errors else f"{where}: bad value {v!r}")
    return v


# --------------------------------------------------------------------------- writing
def dump_table(lines: list[str], name: str, obj: Any, comment: str = "") -> None:
    lines.append("")
    lines += [f"# {ln}" for ln in _wrap(comment)]
    lines.append(f"[{name}]")
    nested = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            nested.append((f"{name}.{f.name}", value, f.metadata.get("doc", "")))
            continue
        lines += [f"# {ln}" for ln in _wrap(f.metadata.get("doc", ""))]
        lines.append(f"{f.name} = {toml_value(value)}")
    for sub, value, d in nested:
        dump_table(lines, sub, value, d)


def _wrap(text: str, width: int = 88) -> list[str]:
    return textwrap.wrap(text, width) if text else []


def toml_value(v: Any) -> str:
    if isinstance(v, enum.Enum):
        v = v.value
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if dataclasses.is_dataclass(v):  # an element of a list of tables, e.g. [capture] rules: an inline table
        return "{" + ", ".join(f"{f.name} = {toml_value(getattr(v, f.name))}" for f in dataclasses.fields(v)) + "}"
    if v is None:
        raise ConfigError("TOML has no null; give the setting a value")
    raise ConfigError(f"cannot write {type(v).__name__} to TOML")
