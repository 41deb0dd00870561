"""The agent's configuration: typed, frozen, read from a strict TOML file.

Every setting is a dataclass field with a unit in its name where it has one and a ``doc``
in its metadata; :func:`dumps` writes that doc as a comment above each key, so the file
``edgeship-agent install`` writes documents itself. Unknown keys and wrong types are
refused with the key and the file named (one loader for every section:
:mod:`device_agent.configfile`).

Sections owned by other parts of the agent (``[update]``, ``[mqtt]``) are registered in
:data:`SECTIONS` as ``"module:Class"`` (a frozen dataclass with defaults) and imported only
when needed; read them with ``config.section("update")``.
"""

from __future__ import annotations

import enum
import importlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .configfile import ConfigError, doc, dump_table, load_table

#: extra top-level sections: name -> "module:FrozenDataclass" (imported lazily)
SECTIONS: dict[str, str] = {
    "update": "device_agent.ota.config:UpdateSection",
    "mqtt": "device_agent.mqtt.config:MqttConfig",
    "capture": "device_agent.capture.config:CaptureSection",
    "drift": "device_agent.monitoring.drift:DriftSection",
}

DEFAULT_CONFIG_PATH = "/etc/edgeship/agent.toml"


class LogLevel(str, enum.Enum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class AgentSection:
    state_dir: str = doc("Directory for models, pointers and the update journal (must be writable).",
                         "/var/lib/edgeship")
    log_level: LogLevel = doc("Least severe log level written: debug, info, warning or error.", LogLevel.INFO)
    log_file: str = doc("Append JSON log lines to this file; empty writes them to stderr (journald).", "")
    gc_after_switch: bool = doc("After every model switch, delete stored models that are neither active, "
                                "previous, in use, nor installed within gc_min_age_s.", True)
    gc_min_age_s: float = doc("Models installed more recently than this are never garbage-collected "
                              "(an update may have staged one it has not switched to yet).", 3600.0)


@dataclass(frozen=True)
class BatchingSection:
    max_batch_size: int = doc("Concurrent requests merged into one engine call; 1 turns batching off. "
                              "Only models whose inputs and outputs have a dynamic first dimension batch.", 1)
    max_wait_ms: float = doc("Longest a request waits for others to fill a batch, in milliseconds.", 2.0)


@dataclass(frozen=True)
class ServingSection:
    host: str = doc("Address the HTTP API listens on. 127.0.0.1 keeps it local; 0.0.0.0 exposes it.",
                    "127.0.0.1")
    port: int = doc("TCP port of the HTTP API (Open Inference Protocol v2).", 8080)
    grpc_port: int = doc("TCP port of the gRPC API (Open Inference Protocol GRPCInferenceService, on the "
                         "same host); needs the grpc extra. 0 turns gRPC off.", 0)
    max_body_bytes: int = doc("Largest request body accepted; larger ones get 413.", 16 << 20)
    engine_threads: int = doc("Threads per inference engine session; 0 lets the engine choose.", 0)
    drain_timeout_s: float = doc("After a model switch, how long to wait for requests still running "
                                 "on the old model before closing it anyway.", 30.0)
    inline_below_ms: float = doc("Run a request on the event loop itself, skipping the hop to a worker "
                                 "thread (~0.1 ms), when the model's recent average latency is below "
                                 "this; slower models always run in worker threads. 0 turns it off. "
                                 "Ignored while batching is on.", 1.0)
    control_enabled: bool = doc("Serve /edgeship/v1/* control endpoints (rollback, status) to local "
                                "callers holding the token in <state_dir>/control.token.", True)
    metrics_enabled: bool = doc("Serve GET /metrics (Prometheus text format) on this address and port. "
                                "It needs no token: it shows counts and the served model's name and hash.",
                                True)
    header_timeout_s: float = doc("A connection must send a request's headers within this many seconds "
                                  "of its first byte (or of connecting); slower ones (half-open, "
                                  "slowloris) are closed.", 10.0)
    body_timeout_s: float = doc("Longest pause between two pieces of a request body before the "
                                "connection is closed.", 30.0)
    keep_alive_s: float = doc("An idle keep-alive connection is closed after this many seconds.", 30.0)
    max_connections: int = doc("Open HTTP connections at most; at the cap the oldest connection that has "
                               "no request in progress is closed for a new one, and when every one is busy "
                               "new requests get a fast 503. 0: the process's open-file limit less 256.", 0)
    batching: BatchingSection = doc("Batching of concurrent requests (off by default).",
                                    default_factory=BatchingSection)


@dataclass(frozen=True)
class AgentConfig:
    agent: AgentSection = field(default_factory=AgentSection)
    serving: ServingSection = field(default_factory=ServingSection)
    #: registered extra sections present in the file: name -> dataclass instance
    extensions: Mapping[str, Any] = field(default_factory=dict)
    #: the file this was read from (None when built in code)
    source: str | None = None

    @property
    def state_dir(self) -> Path:
        return Path(self.agent.state_dir)

    def section(self, name: str) -> Any:
        """A registered extra section: the file's values, or the defaults when it has none.

        Raises:
            ConfigError: ``name`` is not registered in SECTIONS.
        """
        if name in self.extensions:
            return self.extensions[name]
        return _section_class(name)()

    @classmethod
    def for_state_dir(cls, state_dir: str | os.PathLike, **serving: Any) -> "AgentConfig":
        """A config in code (tests, embedding): defaults plus a state dir and serving overrides."""
        return cls(agent=AgentSection(state_dir=os.fspath(state_dir)), serving=ServingSection(**serving))


# --------------------------------------------------------------------------- reading
def load_config(path: str | os.PathLike) -> AgentConfig:
    """Read and check a TOML config file.

    Raises:
        ConfigError: missing file, invalid TOML, unknown key, wrong type or value (naming
            the key and the file).
    """
    where = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{where}: config file not found (create one with `edgeship-agent install`)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from e
    return parse_config(data, where=where)


def parse_config(data: Mapping[str, Any], *, where: str = "<config>") -> AgentConfig:
    """Build an AgentConfig from parsed TOML (see :func:`load_config` for errors)."""
    known = {"agent", "serving", *SECTIONS}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {unknown}; known: {sorted(known)}")
    ext = {name: load_table(_section_class(name), data[name], f"{where}: [{name}]")
           for name in SECTIONS if name in data}
    cfg = AgentConfig(agent=load_table(AgentSection, data.get("agent", {}), f"{where}: [agent]"),
                      serving=load_table(ServingSection, data.get("serving", {}), f"{where}: [serving]"),
                      extensions=ext, source=where)
    _check(cfg, where)
    return cfg


def _check(cfg: AgentConfig, where: str) -> None:
    s = cfg.serving
    if not 0 <= s.port <= 65535:
        raise ConfigError(f"{where}: serving.port {s.port} is not a TCP port")
    if not 0 <= s.grpc_port <= 65535 or (s.grpc_port and s.grpc_port == s.port):
        raise ConfigError(f"{where}: serving.grpc_port {s.grpc_port} is not a TCP port other than serving.port")
    if min(s.header_timeout_s, s.body_timeout_s, s.keep_alive_s) <= 0 or s.max_connections < 0:
        raise ConfigError(f"{where}: serving.header_timeout_s, body_timeout_s and keep_alive_s must be > 0, "
                          f"max_connections >= 0")
    if s.max_body_bytes < 1024:
        raise ConfigError(f"{where}: serving.max_body_bytes must be at least 1024")
    if s.engine_threads < 0 or s.drain_timeout_s < 0 or s.inline_below_ms < 0:
        raise ConfigError(f"{where}: serving.engine_threads, drain_timeout_s and inline_below_ms must be >= 0")
    if s.batching.max_batch_size < 1 or s.batching.max_wait_ms < 0:
        raise ConfigError(f"{where}: serving.batching.max_batch_size must be >= 1 and max_wait_ms >= 0")
    if cfg.agent.gc_min_age_s < 0:
        raise ConfigError(f"{where}: agent.gc_min_age_s must be >= 0")
    if not cfg.agent.state_dir:
        raise ConfigError(f"{where}: agent.state_dir must not be empty")


def _section_class(name: str):
    try:
        target = SECTIONS[name]
    except KeyError:
        raise ConfigError(f"no config section {name!r} is registered (known: {sorted(SECTIONS)})") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


# --------------------------------------------------------------------------- writing
def dumps(cfg: AgentConfig | None = None, *, header: str = "", commented_defaults: bool = False) -> str:
    """The config as TOML, every key preceded by its documentation as a comment.

    ``commented_defaults`` adds every registered section the config does not set, with its
    defaults, commented out: documented but inert until uncommented.
    """
    cfg = cfg or AgentConfig()
    lines = [f"# {ln}" if ln else "#" for ln in header.splitlines()]
    sections: list[tuple[str, Any]] = [("agent", cfg.agent), ("serving", cfg.serving)]
    sections += sorted(cfg.extensions.items())
    for name, obj in sections:
        dump_table(lines, name, obj)
    if commented_defaults:
        for name in sorted(set(SECTIONS) - set(cfg.extensions)):
            try:
                obj = _section_class(name)()
            except (ImportError, AttributeError, ConfigError):
                continue
            sub: list[str] = []
            dump_table(sub, name, obj, f"[{name}] is not set: the defaults below apply. Uncomment to change.")
            lines += [ln if (not ln or ln.startswith("#")) else f"#{ln}" for ln in sub]
    return "\n".join(lines).lstrip("\n") + "\n"
