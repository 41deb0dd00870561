"""The ``[update]`` section of the agent config (registered in ``device_agent.config.SECTIONS``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from runtime.contracts.statedir import StateDir

from ..configfile import doc
from .states import RecoveryPolicy


class MemoryPolicy(str, enum.Enum):
    """What the gate does when the new model would not fit in memory beside the old one.

    ``refuse``: fail the update (``gate.memory``); the old model keeps serving.
    ``unload_first``: unload the old model (requests get 503 with ``Retry-After`` meanwhile),
    load and gate the new one alone, and reload the old one if the gate fails. A rollback
    after a failed trial unloads the new model before loading the old one the same way.
    """

    REFUSE = "refuse"
    UNLOAD_FIRST = "unload_first"


@dataclass(frozen=True)
class UpdateSection:
    repository_url: str = doc("TUF repository: http(s)://host[:port]/path, or a local directory "
                              "(a mirror, a USB stick) for offline updates. Empty disables updates.", "")
    root_json: str = doc("The trusted root.json this device was provisioned with; empty means "
                         "<state_dir>/trust/root.json.", "")
    poll_interval_s: float = doc("How often `edgeship-agent run` checks the repository for a newer "
                                 "release of the active model; 0 turns polling off.", 0.0)
    download_timeout_s: float = doc("Socket timeout for metadata and bundle downloads, in seconds.", 30.0)
    max_state_entries: int = doc("A state entered this many times in a row (crash loop) ends the update.", 3)
    recovery_policy: RecoveryPolicy = doc("A restart between switch and commit: resume_trial (count the "
                                          "crash, keep watching) or rollback.", RecoveryPolicy.RESUME_TRIAL)
    trial_requests: int = doc("The trial window ends after this many requests to the new model ...", 200)
    trial_duration_s: float = doc("... or after this many seconds, whichever comes first.", 30.0)
    trial_max_error_rate: float = doc("Fraction of failed requests that fails the trial.", 0.02)
    trial_min_requests: int = doc("Requests needed before the error rate is judged.", 10)
    trial_latency_factor: float = doc("The trial fails when p95 latency exceeds the bundle's latency "
                                      "budget times this.", 3.0)
    trial_max_crashes: int = doc("Agent crashes with the new model active (counted across restarts) "
                                 "that roll it back.", 2)
    trial_probe_interval_s: float = doc("During the trial, run one golden input through the agent this "
                                        "often (a canary request); 0 relies on live traffic only.", 0.25)
    gate_device: str = doc("Device the gate and serving run the model on (CPU, GPU, NPU...).", "CPU")
    gate_latency_factor: float = doc("The gate refuses a model whose median golden latency exceeds its "
                                     "latency budget times this.", 5.0)
    gate_timeout_s: float = doc("The gate's child process (load + golden set of the new model) is killed "
                                "and the update fails (gate.latency) after this many seconds.", 300.0)
    allow_precision_change: bool = doc("Accept an engine that runs another precision than the bundle's "
                                       "(e.g. bf16 for fp32 on AMX CPUs).", False)
    memory_policy: MemoryPolicy = doc("New model does not fit beside the old one: refuse (fail the "
                                      "update) or unload_first (unload the old one, requests get 503 "
                                      "with Retry-After until the new one serves or the old one is "
                                      "reloaded).", MemoryPolicy.REFUSE)
    memory_reserve_bytes: int = doc("Memory that must stay free after loading the new model.", 64 << 20)
    memory_load_factor: float = doc("Resident memory of a loaded model, as a multiple of its file size.", 2.0)
    max_onnx_opset: int = doc("Newest ONNX opset this device runs; 0 derives it from the installed "
                              "onnxruntime.", 0)

    def root_json_path(self, paths: StateDir) -> Path:
        return Path(self.root_json) if self.root_json else paths.trust_root

    @classmethod
    def of(cls, config) -> "UpdateSection":
        """The [update] section of an AgentConfig (defaults when there is none, or it is not registered)."""
        from ..configfile import ConfigError

        if config is None:
            return cls()
        try:
            return config.section("update")
        except ConfigError:  # the section is not registered in device_agent.config.SECTIONS
            return cls()
