"""The gate's model checks in a child process, so a model that kills its process spares serving.

Parent side: :func:`check_in_child` runs ``python -m device_agent.ota.gate_child`` with the
model directory and the gate settings, waits at most ``[update] gate_timeout_s``, and turns
the outcome into a :class:`ChildVerdict` or a typed :class:`~.errors.GateError`:

- the child printed ``{"ok": true, ...}``: passed (median golden latency, wall time);
- the child printed ``{"ok": false, "error": "<GateError subclass>", "message": ...}``: that error;
- the child died from a signal (SIGFPE, SIGSEGV, SIGKILL by the OOM killer...) or exited
  without a verdict: :class:`~.errors.GateCrashError` (``gate.crashed``) naming the signal;
- it ran past the timeout: killed, :class:`~.errors.GateLatencyError`.

Child side (:func:`main`): reads model.json from the model directory, loads the model, runs
the schema, fallback and golden-set checks of :mod:`.checks` and prints one JSON line. It
imports the runtime and numpy only (no torch, onnx or toolchain).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import errors
from .config import UpdateSection

#: the settings of [update] the child needs (everything else stays in the parent)
CHILD_SETTINGS = ("gate_device", "gate_latency_factor", "allow_precision_change")
_STDERR_TAIL = 600


@dataclass(frozen=True)
class ChildVerdict:
    median_latency_ms: float | None
    load_s: float
    wall_s: float


# ------------------------------------------------------------------ pure
def verdict_from(*, returncode: int, stdout: str, stderr: str, where: str, wall_s: float) -> ChildVerdict:
    """The child's outcome from its exit status and output.

    Raises:
        GateError: the child's own typed verdict, or GateCrashError when it died or said nothing.
    """
    if returncode < 0:
        raise errors.GateCrashError(f"{where}: the gate's child process running the new model was killed by "
                                    f"{_signame(-returncode)} (the model crashes its engine); the old model "
                                    f"keeps serving{_tail(stderr)}")
    line = next((x for x in reversed(stdout.splitlines()) if x.startswith("{")), None)
    try:
        msg = json.loads(line) if line else None
    except ValueError:
        msg = None
    if not isinstance(msg, dict):
        raise errors.GateCrashError(f"{where}: the gate's child process exited with status {returncode} "
                                    f"without a verdict{_tail(stderr)}")
    if msg.get("ok") is True:
        return ChildVerdict(median_latency_ms=msg.get("median_latency_ms"), load_s=float(msg.get("load_s", 0.0)),
                            wall_s=wall_s)
    cls = getattr(errors, str(msg.get("error")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.GateError)):
        cls = errors.GateCrashError
    raise cls(str(msg.get("message", "")))


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _tail(stderr: str) -> str:
    t = stderr.strip()[-_STDERR_TAIL:]
    return f" (stderr: ...{t})" if t else ""


# ------------------------------------------------------------------ parent shell
def check_in_child(*, model_dir: Path, info, cfg: UpdateSection, threads: int | None) -> ChildVerdict:
    """Run the model checks of the gate in a child process (see the module doc).

    Raises:
        GateError: the failed check's subclass; GateCrashError when the child died.
    """
    where = f"{info.name} r{info.release}"
    settings = {k: getattr(cfg, k) for k in CHILD_SETTINGS}
    cmd = [sys.executable, "-m", __name__, str(model_dir), json.dumps({"threads": threads, **settings})]
    root = str(Path(__file__).resolve().parents[2])  # the dir holding device_agent/ and runtime/
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=cfg.gate_timeout_s, env=env,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise errors.GateLatencyError(f"{where}: loading and running the golden set took longer than "
                                      f"[update] gate_timeout_s = {cfg.gate_timeout_s:g} s; the gate's child "
                                      f"process was killed") from e
    except OSError as e:
        raise errors.GateCrashError(f"{where}: cannot start the gate's child process {sys.executable}: {e}") from e
    return verdict_from(returncode=p.returncode, stdout=p.stdout, stderr=p.stderr, where=where,
                        wall_s=time.perf_counter() - t0)


# ------------------------------------------------------------------ child
def _child(model_dir: Path, opts: dict) -> dict:
    from runtime.contracts.bundle import MODEL_JSON, BundleInfo

    from .checks import load_and_check

    info = BundleInfo.from_bytes((model_dir / MODEL_JSON).read_bytes(), where=str(model_dir / MODEL_JSON))
    cfg = UpdateSection(**{k: opts[k] for k in CHILD_SETTINGS})
    try:
        load_s, median_ms, session = load_and_check(model_dir=model_dir, info=info, cfg=cfg,
                                                    threads=opts.get("threads"), golden=True)
    except errors.GateError as e:
        return {"ok": False, "error": type(e).__name__, "message": str(e)}
    session.close()
    return {"ok": True, "load_s": load_s, "median_latency_ms": median_ms}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m device_agent.ota.gate_child MODEL_DIR SETTINGS_JSON", file=sys.stderr)
        return 2
    print(json.dumps(_child(Path(args[0]), json.loads(args[1]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
