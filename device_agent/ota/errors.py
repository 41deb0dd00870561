"""One error hierarchy for updates, each error named after the attack or fault it detects.

Every error carries a ``reason`` (a :class:`Reason` code that goes into the journal and
the ``UpdateEvent``). Security alarms have codes starting with ``security.``. TUF errors
from ``tuf.ngclient`` are re-raised as ours *from* the original (see ``trust.py``).
"""

from __future__ import annotations

import enum
from typing import ClassVar

from ..errors import DeviceAgentError


class Reason(str, enum.Enum):
    """Why an update ended the way it did (round-trips through JSON and MQTT)."""

    # security alarms (verification failed: someone or something tampered)
    BAD_SIGNATURE = "security.bad_signature"
    METADATA_ROLLBACK = "security.metadata_rollback"
    RELEASE_ROLLBACK = "security.release_rollback"
    EXPIRED_METADATA = "security.expired_metadata"
    TAMPERED_TARGET = "security.tampered_target"
    ENDLESS_DATA = "security.endless_data"
    MIX_AND_MATCH = "security.mix_and_match"
    UNTRUSTED_METADATA = "security.untrusted_metadata"
    # not for this device / nothing to do
    WRONG_TARGET = "compat.wrong_target"
    NO_SUCH_TARGET = "fetch.no_such_target"
    UP_TO_DATE = "release.up_to_date"
    PENALTY_BOX = "penalty.boxed"
    # transport and local faults
    FETCH_FAILED = "fetch.failed"
    STAGE_FAILED = "stage.failed"
    DISK_FULL = "update.disk_full"
    SWITCH_FAILED = "switch.failed"
    # gate (before switch)
    GATE_LOAD = "gate.load"
    GATE_SCHEMA = "gate.schema"
    GATE_NAN = "gate.nan"
    GATE_TOLERANCE = "gate.tolerance"
    GATE_INFERENCE = "gate.inference"
    GATE_FALLBACK = "gate.fallback"
    GATE_LATENCY = "gate.latency"
    GATE_MEMORY = "gate.memory"
    GATE_CRASHED = "gate.crashed"
    # trial (after switch)
    TRIAL_ERROR_RATE = "trial.error_rate"
    TRIAL_LATENCY = "trial.latency"
    TRIAL_CRASH_LOOP = "trial.crash_loop"
    TRIAL_INTERRUPTED = "trial.interrupted"
    # the machine itself
    CRASH_LOOP = "state.crash_loop"
    CANCELLED = "aborted.cancelled"
    OK = "ok"


class UpdateError(DeviceAgentError):
    """Base class of every update error."""

    reason: ClassVar[Reason] = Reason.FETCH_FAILED

    @property
    def is_security(self) -> bool:
        return self.reason.value.startswith("security.")

    @property
    def reason_code(self) -> str:
        """The stable code of :attr:`reason` (the CLI prints it after the message)."""
        return self.reason.value


# ---------------------------------------------------------------- trust / attacks
class SecurityError(UpdateError):
    """Verification failed: the repository or the transport served something untrustworthy."""

    reason = Reason.UNTRUSTED_METADATA


class BadSignatureError(SecurityError):
    """Metadata unsigned, signed by the wrong key, or by fewer keys than the threshold."""

    reason = Reason.BAD_SIGNATURE


class MetadataRollbackError(SecurityError):
    """Metadata older than what this device already trusts (a replayed or frozen repository)."""

    reason = Reason.METADATA_ROLLBACK


class ReleaseRollbackError(SecurityError):
    """A release counter at or below the newest this device ran, and not an operator-signed
    return to a release it ran before (docs/ota.md, the release-counter rule)."""

    reason = Reason.RELEASE_ROLLBACK


class ExpiredMetadataError(SecurityError):
    """Metadata expired at the device's trusted time (freeze attack, or a clock set back)."""

    reason = Reason.EXPIRED_METADATA


class TamperedTargetError(SecurityError):
    """A downloaded file's length or hashes differ from the signed ones."""

    reason = Reason.TAMPERED_TARGET


class EndlessDataError(SecurityError):
    """The server sent more bytes than the signed length."""

    reason = Reason.ENDLESS_DATA


class MixAndMatchError(SecurityError):
    """The bundle's own model.json disagrees with the facts signed into the target metadata."""

    reason = Reason.MIX_AND_MATCH


# ---------------------------------------------------------------- selection / transport
class WrongTargetError(UpdateError):
    """The target's requirements (engine, version, CPU arch, opset) do not fit this device."""

    reason = Reason.WRONG_TARGET


class NoSuchTargetError(UpdateError):
    """The repository has no target for that model (and release)."""

    reason = Reason.NO_SUCH_TARGET


class PenaltyBoxError(UpdateError):
    """The release (by content hash) failed its gate or trial on this device before; only a
    new release, or an operator-signed ``retry`` command, reaches it again."""

    reason = Reason.PENALTY_BOX


class FetchError(UpdateError):
    """The repository could not be reached or a download broke off (retry later)."""

    reason = Reason.FETCH_FAILED


class StageError(UpdateError):
    """The verified bundle could not be installed into the store."""

    reason = Reason.STAGE_FAILED


class DiskFullError(UpdateError):
    """The state dir's file system has no room for the update (refused before the download
    when the signed length says so, or met while downloading or unpacking); partial files are
    removed and the old model keeps serving. ``needed_bytes``/``free_bytes`` say how much."""

    reason = Reason.DISK_FULL

    def __init__(self, message: str, *, needed_bytes: int, free_bytes: int) -> None:
        super().__init__(message)
        self.needed_bytes, self.free_bytes = needed_bytes, free_bytes


class SwitchError(UpdateError):
    """The agent could not switch to the new model (the old one keeps serving)."""

    reason = Reason.SWITCH_FAILED


# ---------------------------------------------------------------- gate
class GateError(UpdateError):
    """The new model failed the gate before the switch."""

    reason = Reason.GATE_TOLERANCE


class GateLoadError(GateError):
    reason = Reason.GATE_LOAD


class GateSchemaError(GateError):
    """Inputs/outputs (names, dtypes, shapes) differ from model.json."""

    reason = Reason.GATE_SCHEMA


class GateNaNError(GateError):
    """The model produced NaN or Inf on the golden set."""

    reason = Reason.GATE_NAN


class GateToleranceError(GateError):
    """Golden outputs moved past the bundle's tolerances."""

    reason = Reason.GATE_TOLERANCE


class GateInferenceError(GateError):
    """The engine raised on a golden input."""

    reason = Reason.GATE_INFERENCE


class GateFallbackError(GateError):
    """The engine runs on another device or precision than the bundle asked for."""

    reason = Reason.GATE_FALLBACK


class GateLatencyError(GateError):
    """Golden-set latency far past the bundle's latency budget."""

    reason = Reason.GATE_LATENCY


class GateMemoryError(GateError):
    """The new model would not fit in memory beside the old one (policy: refuse)."""

    reason = Reason.GATE_MEMORY


class GateCrashError(GateError):
    """The gate's child process running the new model died (a signal such as SIGFPE/SIGSEGV,
    or an exit without a verdict); the serving process was not touched."""

    reason = Reason.GATE_CRASHED


# ---------------------------------------------------------------- machine
class UpdateStateError(UpdateError):
    """An out-of-order transition or call (a bug, or a second update while one runs)."""

    reason = Reason.CRASH_LOOP


class UpdateBusyError(UpdateStateError):
    """Another update is in progress (its journal is not finished)."""


class UpdateCancelledError(UpdateError):
    reason = Reason.CANCELLED
