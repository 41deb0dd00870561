"""Where things live on a device: the agent's state directory and the install layout.

Every path the agent, its CLI, the updater, the MQTT service, the installer and the demo
use is named here once::

    <state_dir>/
      models/<bundle_sha256>/{model.json, model/..., golden.npz}   # complete, read-only
      pointers.json          # {"schema_version": 1, "active": ModelRef|null, "previous": ...}
      tmp/                   # unpack area; emptied when a Store is created
      store.lock             # flock held by every store change
      agent.lock             # flock held by a running agent (or a local `edgeship-agent update`)
      agent.json             # {pid, host, port} of the running agent
      control.token          # the local control API's secret (0600), sent in TOKEN_HEADER
      trust/root.json        # the TUF root of trust the device was provisioned with (+ operator keys)
      update/                # OTA: journal.json, trusted_time.json, releases.json, metadata/, downloads/[partial/]
      telemetry/             # MQTT (default [mqtt] queue_dir): queue.sqlite, control.json, replay.json
      capture/               # captured requests (default [capture] dir): index.json, <id>.npz, pulls.json

    <prefix>/etc/edgeship/agent.toml, <prefix>/var/lib/edgeship/ (the state dir),
    <prefix>/etc/systemd/system/edgeship-agent.service        # InstallLayout

Pure: paths are computed, nothing is created or read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "edgeship-agent.service"


@dataclass(frozen=True)
class StateDir:
    """The paths under one agent state directory."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> "StateDir":
        return cls(Path(root))

    # ------------------------------------------------------------ model store
    @property
    def models(self) -> Path:
        return self.root / "models"

    def model(self, sha256: str) -> Path:
        return self.models / sha256

    @property
    def pointers(self) -> Path:
        return self.root / "pointers.json"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def store_lock(self) -> Path:
        return self.root / "store.lock"

    # ------------------------------------------------------------ the agent process
    @property
    def agent_lock(self) -> Path:
        return self.root / "agent.lock"

    @property
    def agent_info(self) -> Path:
        return self.root / "agent.json"

    @property
    def control_token(self) -> Path:
        return self.root / "control.token"

    # ------------------------------------------------------------ OTA updates
    @property
    def trust_root(self) -> Path:
        """The provisioned TUF root.json (``[update] root_json`` may name another file)."""
        return self.root / "trust" / "root.json"

    @property
    def trusted_roots(self) -> tuple[Path, Path]:
        """Where a TUF root.json this device trusts may be: the newest one ngclient verified
        (``update/metadata/root.json``) and the provisioned one. The operator keys of the
        control plane are read from whichever has the higher version."""
        return self.tuf_metadata / "root.json", self.trust_root

    @property
    def update(self) -> Path:
        return self.root / "update"

    @property
    def release_memory(self) -> Path:
        """Releases this device ran (the rollback rule) and the ones that failed here (the
        penalty box), by model: ``device_agent.ota.releases``."""
        return self.update / "releases.json"

    @property
    def journal(self) -> Path:
        return self.update / "journal.json"

    @property
    def trusted_time(self) -> Path:
        return self.update / "trusted_time.json"

    @property
    def tuf_metadata(self) -> Path:
        return self.update / "metadata"

    @property
    def downloads(self) -> Path:
        return self.update / "downloads"

    def download(self, sha256: str) -> Path:
        """A verified bundle download, named by its hash."""
        return self.downloads / f"{sha256}.tar"

    @property
    def partial_downloads(self) -> Path:
        return self.downloads / "partial"

    # ------------------------------------------------------------ MQTT
    @property
    def telemetry(self) -> Path:
        """The default ``[mqtt] queue_dir`` (see :class:`QueueDir`)."""
        return self.root / "telemetry"

    # ------------------------------------------------------------ captured data
    @property
    def capture(self) -> Path:
        """The default ``[capture] dir``: a capture set (runtime.contracts.capture.fileformat)."""
        return self.root / "capture"


@dataclass(frozen=True)
class QueueDir:
    """The MQTT service's directory (``[mqtt] queue_dir``, by default ``<state_dir>/telemetry``)."""

    root: Path

    @property
    def queue(self) -> Path:
        """The durable outbox (SQLite WAL)."""
        return self.root / "queue.sqlite"

    @property
    def control_state(self) -> Path:
        """The desired-state bookkeeping (applied version, last deployment, rejected releases)."""
        return self.root / "control.json"

    @property
    def control_replay(self) -> Path:
        """The newest version accepted per operator key and topic (runtime.contracts.mqtt.signing)."""
        return self.root / "replay.json"


@dataclass(frozen=True)
class InstallLayout:
    """Where ``edgeship-agent install`` puts the config, the state dir and the systemd unit;
    ``under(prefix)`` puts everything below a directory (tests, systems without root)."""

    config: Path
    state_dir: Path
    unit: Path

    @classmethod
    def under(cls, prefix: str | os.PathLike | None) -> "InstallLayout":
        base = Path(prefix).resolve() if prefix else Path("/")
        return cls(config=base / "etc/edgeship/agent.toml", state_dir=base / "var/lib/edgeship",
                   unit=base / "etc/systemd/system" / UNIT_NAME)
