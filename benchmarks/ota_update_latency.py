"""OTA figures, measured side by side in one run (issue 5):

1. from a verified 10 MB bundle to serving it (stage + gate + switch), target < 2 s;
2. automatic rollback after a failed trial (trial verdict -> old model serving), target < 1 s;
3. failed requests through both under a steady open-loop 200 requests/s, target 0.

The targets live in ``TARGETS``; each time figure is judged over ``--runs`` runs (median and
spread, see ``_verdict``) and the script exits 1 on a miss, 3 when a figure is inconclusive.

A real repository (`edgeship keys init` + `edgeship publish` code), served on loopback by
the `edgeship repo serve` server, a real store and Agent, ONNX Runtime. The trial that
fails is a release whose latency budget its model cannot meet (a failure that fails no
request, so any failed request would come from the switch machinery itself).

    .venv/bin/python benchmarks/ota_update_latency.py [--bundle-mb 10] [--rate 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import OpenLoop  # noqa: E402
from _verdict import Load as MachineLoad, LoadMonitor, Report, Target  # noqa: E402

TARGETS = {
    "verified_to_serving_s": Target("verified bundle -> serving it (stage+gate+switch)", "<", 2.0, "s",
                                    fmt=".3f", load="up"),
    "rollback_s": Target("failed trial -> old model serving (rollback)", "<", 1.0, "s", fmt=".3f", load="up"),
    "failed": Target("failed requests during update + rollback", "<=", 0, fmt=".0f", load="none"),
}

X = np.array([[[0.5, 1.0, 2.0, 3.0]], [[-1.0, 0.0, 4.0, 5.0]]], np.float32)


def _model(variant: int) -> bytes:
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    a, b = (["x", "two"], "Mul") if variant % 2 else (["x", "x"], "Add")
    g = h.make_graph([h.make_node(b, a, ["x2"]), h.make_node("Add", ["x2", "one"], ["y"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, 4])], [h.make_tensor_value_info("y", T.FLOAT, [1, 4])],
                     initializer=[h.make_tensor("two", T.FLOAT, [], [2.0]), h.make_tensor("one", T.FLOAT, [], [1.0])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def make_bundle(out: Path, *, release: int, pad_bytes: int, budget_ms: float) -> Path:
    from runtime.contracts.bundle import BundleInfo, FileEntry, Precision, Requirements, Source, Tolerances
    from runtime.fsutil import sha256_bytes
    from runtime.spec import Engine, TensorSpec

    g = io.BytesIO()
    np.savez(g, **{"in:x": X, "out:y": X * 2 + 1})
    members = {"model/model.onnx": _model(release), "golden.npz": g.getvalue(),
               "model/weights.bin": np.random.default_rng(release).bytes(pad_bytes)}
    info = BundleInfo(
        name="bench", version=f"1.0.{release}", release=release, engine=Engine.ONNXRUNTIME,
        precision=Precision.FP32, model_file="model.onnx", inputs=(TensorSpec("x", "float32", (1, 4)),),
        outputs=(TensorSpec("y", "float32", (1, 4)),),
        requirements=Requirements(engine=Engine.ONNXRUNTIME, min_engine_version="1.17",
                                  arch=("x86_64", "aarch64", "armv7l"), opset=17),
        latency_budget_ms=budget_ms, tolerances=Tolerances(atol=1e-4, min_cosine=0.999), golden_calls=len(X),
        input_stats={}, output_stats={},
        files=tuple(FileEntry(p, sha256_bytes(b), len(b)) for p, b in sorted(members.items())),
        source=Source(build_manifest_sha256="0" * 64, artifact_id="bench"))
    members["model.json"] = info.to_bytes()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{release}.tar"
    with tarfile.open(path, "w:", format=tarfile.PAX_FORMAT) as tf:
        for n in sorted(members):
            ti = tarfile.TarInfo(n)
            ti.size = len(members[n])
            tf.addfile(ti, io.BytesIO(members[n]))
    return path


class Load:
    """A steady open-loop load through Agent.infer (``_load.OpenLoop``: request i due at
    t0 + i/rate, latency from that time, several workers), counted by outcome.

    With ``count_retry`` a NotReadyError carrying Retry-After (the unload-first 503 window)
    counts as ``retry``; otherwise every exception counts as ``failed`` (its repr in ``errors``).
    """

    def __init__(self, agent, rate: float, *, count_retry: bool = False, workers: int = 8) -> None:
        self.agent, self.count_retry = agent, count_retry
        self._loop = OpenLoop(self._make_call, rate=rate, workers=workers)

    def _make_call(self):
        from device_agent.agent import NotReadyError

        feeds = {"x": X[0]}

        def call():
            try:
                self.agent.infer(feeds)
                return "ok"
            except NotReadyError as e:
                if self.count_retry and e.retry_after_s is not None:
                    return "retry"
                raise
        return call

    def __enter__(self):
        self._loop.__enter__()
        return self

    def __exit__(self, *exc):
        self._loop.stop()
        self.summary = self._loop.summary()
        self.duration_s = self.summary["duration_s"]
        self.ok, self.retry = self._loop.count("ok"), self._loop.count("retry")
        self.failed = self._loop.count("failed")
        self.errors = list(self._loop.errors)


class Rig(NamedTuple):
    """A device serving release 1 from a signed repository on loopback."""

    keys: Path
    repo: Path
    state: Path
    store: object  # device_agent.store.Store
    server: object  # the repository's HTTP server (``shutdown()`` when done)
    url: str


def serve_first_release(tmp: Path, b1: Path) -> Rig:
    """Keys, a repository publishing ``b1``, a device store serving it and trusting the root."""
    from device_agent.store import Store
    from toolchain.ota.keys import init_keys
    from toolchain.ota.publish import publish
    from toolchain.ota.serve import serve_in_thread

    keys, repo, state = tmp / "keys", tmp / "repo", tmp / "device"
    root = init_keys(keys_dir=keys)
    publish(bundle=b1, repo_dir=repo, keys_dir=keys, init=True)
    store = Store(state)
    store.activate(store.install_bundle(b1).sha256)
    (state / "trust").mkdir()
    (state / "trust" / "root.json").write_bytes(root.read_bytes())
    srv, url = serve_in_thread(repo)
    return Rig(keys, repo, state, store, srv, url)


def one_run(tmp: Path, *, pad: int, rate: float) -> dict:
    from device_agent.agent import Agent
    from device_agent.config import AgentConfig
    from device_agent.ota import State, Updater
    from device_agent.ota.config import UpdateSection
    from toolchain.ota.publish import publish

    keys, repo, state, store, srv, url = serve_first_release(
        tmp, make_bundle(tmp / "b", release=1, pad_bytes=pad, budget_ms=50.0))
    agent = Agent(AgentConfig.for_state_dir(state), store=store)
    marks: dict[str, float] = {}

    def on_event(ev):
        marks.setdefault(ev.state, time.perf_counter())

    ucfg = UpdateSection(repository_url=url, trial_requests=100, trial_duration_s=1.0, trial_min_requests=20,
                         trial_probe_interval_s=0.0, gate_latency_factor=1e9, trial_latency_factor=1.0)
    up = Updater(AgentConfig.for_state_dir(state), store, agent, update_config=ucfg)
    out = {}
    with Load(agent, rate) as load:
        time.sleep(0.3)
        publish(bundle=make_bundle(tmp / "b", release=2, pad_bytes=pad, budget_ms=50.0), repo_dir=repo, keys_dir=keys)
        res = up.update("bench", on_event=on_event)
        assert res.state is State.COMMIT, res
        out["verified_to_serving_s"] = marks["trial"] - marks["stage"]
        out["fetch_to_serving_s"] = marks["trial"] - marks["fetch"]
        # release 3 cannot meet its latency budget: the trial fails and rolls back
        publish(bundle=make_bundle(tmp / "b", release=3, pad_bytes=pad, budget_ms=0.0001), repo_dir=repo, keys_dir=keys)
        marks.clear()
        real_rollback = agent.rollback

        def timed_rollback(*a, **kw):
            marks["rollback_start"] = time.perf_counter()
            return real_rollback(*a, **kw)

        agent.rollback = timed_rollback
        res = up.update("bench", on_event=on_event)
        assert res.state is State.ROLLED_BACK, res
        out["rollback_s"] = marks["rolled_back"] - marks["rollback_start"]
        out["rollback_reason"] = res.reason.value
        out["serving_release_after"] = agent.current().ref.release
        time.sleep(0.2)
    out.update(requests=load.ok + load.failed, failed=load.failed, errors=load.errors[:3],
               achieved_rate=load.summary["achieved_per_s"], p99_ms=load.summary["latency_ms"]["p99"],
               worst_ms=load.summary["latency_ms"]["max"])
    agent.close()
    srv.shutdown()
    return out


def parse_args(argv, *, description: str) -> tuple[argparse.Namespace, int]:
    """The options of the OTA benchmarks, and the bundle padding in bytes they ask for."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--bundle-mb", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args(argv)
    return a, int(a.bundle_mb * (1 << 20))


def verdicts(rows: list[dict], *, load: MachineLoad | None) -> Report:
    """Verdict rows from per-run figures (pure; tests feed synthetic numbers)."""
    rep = Report()
    rep.judge(TARGETS["verified_to_serving_s"], [r["verified_to_serving_s"] for r in rows], load=load)
    rep.info("fetch start -> serving it (incl. TUF + download)", [r["fetch_to_serving_s"] for r in rows],
             unit="s", fmt=".3f", load=load)
    reasons = sorted({f"{r['rollback_reason']}, serving release {r['serving_release_after']}" for r in rows})
    rep.judge(TARGETS["rollback_s"], [r["rollback_s"] for r in rows], load=load, note="; ".join(reasons))
    rep.judge(TARGETS["failed"], sum(r["failed"] for r in rows) if rows else [], exact=True, load=load,
              note=f"{sum(r['requests'] for r in rows)} sent")
    if rows:
        rep.info("achieved request rate", [r["achieved_rate"] for r in rows], unit="/s", fmt=".0f", load=load)
        rep.info("p99 request latency from its schedule", [r["p99_ms"] for r in rows], unit="ms", fmt=".2f",
                 load=load)
        rep.info("worst request latency from its schedule", [r["worst_ms"] for r in rows], unit="ms", fmt=".2f",
                 load=load)
    return rep


def main(argv=None) -> int:
    a, pad = parse_args(argv, description=__doc__.splitlines()[0])
    rows = []
    with LoadMonitor() as mon:
        for i in range(a.runs):
            with tempfile.TemporaryDirectory(prefix="edgeship-ota-bench-") as d:
                rows.append(one_run(Path(d), pad=pad, rate=a.rate))
    print(f"OTA update figures: {a.bundle_mb:g} MB bundles, open-loop {a.rate:g} req/s through Agent.infer, "
          f"{a.runs} runs (median [spread])")
    for r in rows:
        for e in r["errors"]:
            print(f"    error: {e}")
    rep = verdicts(rows, load=mon.load())
    rep.print()
    return rep.exit_code()


if __name__ == "__main__":
    sys.exit(main())
