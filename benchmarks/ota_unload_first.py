"""The `[update] memory_policy` figures, measured side by side in one run:

the same update (10 MB bundles, real repository on loopback, real store and Agent, ONNX
Runtime, a steady 200 requests/s through Agent.infer) on a device whose memory holds one
model but not two, under `refuse` and `unload_first`, and with room for both as a baseline.
Memory is simulated (available = total - 2 x file size of every open session), so the run
does not depend on this machine's free memory; loading and the gate are real.

Figures: the outcome, the update time, the 503 window (old model unloaded -> new model
serving) and the requests answered "retry" (NotReadyError with Retry-After) or failed.
Targets (``CASES``/``TARGETS``): each policy gives its outcome in every run, and no request
fails; times are printed with their spread, without a target.

    .venv/bin/python benchmarks/ota_unload_first.py [--bundle-mb 10] [--rate 200] [--runs 3]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ota_update_latency import Load, make_bundle, parse_args, serve_first_release  # noqa: E402
from _verdict import Load as MachineLoad, LoadMonitor, Report, Target  # noqa: E402

#: (memory, policy, tight memory?, the outcome the policy must give)
CASES = (("room for both", "refuse", False, "commit (ok)"),
         ("one model only", "refuse", True, "failed (gate.memory)"),
         ("one model only", "unload_first", True, "commit (ok)"))
TARGETS = {
    "outcome": lambda label, policy: Target(f"{label}, {policy}: outcome as expected", ">=", 1.0,
                                            "of runs", fmt=".0%", load="none"),
    "failed": lambda label, policy: Target(f"{label}, {policy}: failed requests", "<=", 0, fmt=".0f",
                                           load="none"),
}


def one_run(tmp: Path, *, pad: int, rate: float, policy: str, tight: bool) -> dict:
    from device_agent.agent import Agent
    from device_agent.config import AgentConfig
    from device_agent.ota import Updater
    from device_agent.ota.config import MemoryPolicy, UpdateSection
    from device_agent.ota.gate import model_file_bytes
    from runtime.contracts.bundle import read_bundle_info
    from toolchain.ota.publish import publish

    b1 = make_bundle(tmp / "b", release=1, pad_bytes=pad, budget_ms=50.0)
    b2 = make_bundle(tmp / "b", release=2, pad_bytes=pad, budget_ms=50.0)
    keys, repo, state, store, srv, url = serve_first_release(tmp, b1)
    cfg = AgentConfig.for_state_dir(state)
    agent = Agent(cfg, store=store)
    resident = {p: 2 * model_file_bytes(read_bundle_info(p)) for p in (b1, b2)}
    total = sum(resident.values()) - (1 if tight else -(1 << 30))

    def available() -> int:
        return total - sum(2 * model_file_bytes(store.info(s)) for s in agent.in_use())

    marks: dict[str, float] = {}
    real_unload, real_switch = agent.unload, agent.switch_to

    def unload(**kw):
        marks["unload"] = time.perf_counter()
        return real_unload(**kw)

    def switch_to(*a, **kw):
        r = real_switch(*a, **kw)
        marks["serving_new"] = time.perf_counter()
        return r

    agent.unload, agent.switch_to = unload, switch_to
    ucfg = UpdateSection(repository_url=url, trial_requests=50, trial_duration_s=1.0, trial_min_requests=20,
                         trial_probe_interval_s=0.0, memory_policy=MemoryPolicy(policy), memory_reserve_bytes=0)
    up = Updater(cfg, store, agent, update_config=ucfg, available_bytes=available)
    with Load(agent, rate, count_retry=True) as load:
        time.sleep(0.3)
        publish(bundle=b2, repo_dir=repo, keys_dir=keys)
        t0 = time.perf_counter()
        res = up.update("bench")
        update_s = time.perf_counter() - t0
        time.sleep(0.2)
    agent.close()
    srv.shutdown()
    window = marks["serving_new"] - marks["unload"] if "unload" in marks and "serving_new" in marks else None
    return {"outcome": f"{res.state.value} ({res.reason.value})", "update_s": update_s, "window_s": window,
            "ok": load.ok, "retry": load.retry, "failed": load.failed}


def verdicts(cases: list[tuple[str, str, str, list[dict]]], *, load: MachineLoad | None) -> Report:
    """Verdict rows from per-case runs ``(label, policy, expected outcome, runs)`` (pure)."""
    rep = Report()
    for label, policy, expected, rows in cases:
        got = [r["outcome"] for r in rows]
        rep.judge(TARGETS["outcome"](label, policy), (sum(o == expected for o in got) / len(got)) if got else [],
                  exact=True, load=load, note=f"expected {expected}; got {', '.join(sorted(set(got))) or 'nothing'}")
        rep.judge(TARGETS["failed"](label, policy), sum(r["failed"] for r in rows) if rows else [], exact=True, load=load,
                  note=f"ok {sum(r['ok'] for r in rows)}, retry {sum(r['retry'] for r in rows)}")
        rep.info(f"{label}, {policy}: update time", [r["update_s"] for r in rows], unit="s", fmt=".3f", load=load)
        window = [r["window_s"] for r in rows if r["window_s"] is not None]
        if window:
            rep.info(f"{label}, {policy}: 503 window", window, unit="s", fmt=".3f", load=load)
    return rep


def main(argv=None) -> int:
    a, pad = parse_args(argv, description=__doc__.splitlines()[0])
    print(f"memory_policy figures: {a.bundle_mb:g} MB bundles, open-loop {a.rate:g} req/s through Agent.infer, "
          f"{a.runs} runs each (median [spread]; requests summed over runs)")
    measured = []
    with LoadMonitor() as mon:
        for label, policy, tight, expected in CASES:
            rows = []
            for _ in range(a.runs):
                with tempfile.TemporaryDirectory(prefix="edgeship-unload-bench-") as d:
                    rows.append(one_run(Path(d), pad=pad, rate=a.rate, policy=policy, tight=tight))
            measured.append((label, policy, expected, rows))
    rep = verdicts(measured, load=mon.load())
    rep.print()
    return rep.exit_code()


if __name__ == "__main__":
    sys.exit(main())
