"""MQTT telemetry and control plane of the agent (issue 6; topics and payloads in docs/mqtt.md).

MQTT carries intent and measurements only: a desired-state document names a model and a
release; the bytes always come through the agent's TUF-verified update path.

Modules: ``queue`` (durable SQLite WAL outbox; its values in ``outbox``, its group commit in
``groupcommit``, the sender's window on it in ``tail``), ``link`` (paho-mqtt client + sender),
``inbound`` (the door: every operator message signed, addressed, fresh; rate-limited
refusals) with ``trust`` (operator keys from the TUF root, the persisted replay state),
``control`` (desired-state decisions and persisted state), ``commands``, ``system``,
``service`` (the I/O shell binding them), ``install`` (the ``[mqtt]`` flags of
``edgeship-agent install``). Topics and payloads are ``runtime.contracts.mqtt``. paho-mqtt is
imported only when the service starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from runtime.contracts.statedir import StateDir

from .config import MqttConfig
from .errors import QueueError, TelemetryConfigError, TelemetryError

__all__ = ["start", "MqttConfig", "TelemetryError", "TelemetryConfigError", "QueueError"]


def start(config: Any, agent: Any, updater: Any = None, *, capture_store: Any = None):
    """Start telemetry and control for ``agent`` (and ``updater``, may be None); returns the
    running :class:`~device_agent.mqtt.service.TelemetryService` (call ``.stop()``).

    ``config`` is an :class:`MqttConfig`, or the agent config with an ``mqtt`` attribute/key
    (a mapping or an MqttConfig) and a ``state_dir`` (the queue goes to ``<state_dir>/telemetry``).
    The operator keys come from ``[mqtt] operator_root`` or the state dir's TUF roots; with an
    ``updater``, a message signed by a key not seen yet triggers one TUF refresh (a rotation).
    ``capture_store`` (a ``device_agent.capture.store.CaptureStore``) answers capture pulls;
    without one they are refused (``capture.off``).

    Raises:
        TelemetryConfigError: the [mqtt] settings are invalid or missing.
        QueueError: the durable queue cannot be opened.
    """
    from .service import TelemetryService
    from .trust import OperatorTrust

    cfg, state_dir = _mqtt_config(config)
    roots = [Path(cfg.operator_root)] if cfg.operator_root else (
        list(StateDir(state_dir).trusted_roots) if state_dir is not None else [])
    refresh = getattr(updater, "refresh_trust", None)
    return TelemetryService(cfg, agent, updater, trust=OperatorTrust(roots, refresh=refresh),
                            capture_store=capture_store).start()


def _mqtt_config(config: Any) -> tuple[MqttConfig, Path | None]:
    if isinstance(config, MqttConfig):
        if not config.queue_dir:
            raise TelemetryConfigError("[mqtt] queue_dir is empty and no state_dir was given")
        return config, None
    if isinstance(config, Mapping):
        section, state_dir = config.get("mqtt"), config.get("state_dir")
    else:  # device_agent.config.AgentConfig (mqtt registered in SECTIONS) or a similar object
        ext = getattr(config, "extensions", None) or {}
        section = ext.get("mqtt") if "mqtt" in ext else getattr(config, "mqtt", None)
        state_dir = getattr(config, "state_dir", None)
    if section is None:
        raise TelemetryConfigError("the agent config has no [mqtt] section")
    if not isinstance(section, MqttConfig):
        section = MqttConfig.from_mapping(section)
    if state_dir is not None:
        section = section.with_state_dir(state_dir)
    if not section.queue_dir:
        raise TelemetryConfigError("[mqtt] queue_dir is empty and the config has no state_dir")
    return section, Path(state_dir) if state_dir is not None else None
