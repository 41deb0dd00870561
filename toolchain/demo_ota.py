"""`make demo-ota`: the whole OTA story on one machine, with real processes.

A mosquitto broker, a TUF repository served over HTTP (`edgeship repo serve`), an agent
installed under a prefix and running with MQTT (`edgeship-agent run`), then: publish release
1 and push it, publish release 2 and push it, publish a deliberately bad release 3 (a model
whose outputs are not deterministic, so its golden set fails the gate) that the device
refuses while release 2 keeps serving, and a manual rollback over MQTT. The fleet status
table is printed after each step.

The tiny models are written with onnx.helper (no torch export needed), compiled into a
build directory per docs/design.md and packaged with `edgeship package`'s code path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runtime.contracts.statedir import InstallLayout, StateDir
from runtime.fsutil import file_entry, sha256_file


def _tiny_onnx(scale: float):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = (np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0) * scale
    b = np.array([0.1, -0.2, 0.3], dtype=np.float32) * scale
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeship-demo")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def make_tiny_build(root: Path, *, name: str = "tiny", scale: float = 1.0, samples: int = 16) -> Path:
    """A build directory (docs/design.md) with one ONNX Runtime fp32 artifact of a 4->3 linear model."""
    import onnx

    root.mkdir(parents=True, exist_ok=True)
    model = _tiny_onnx(scale)
    for sub in ("reference", "onnxruntime-fp32", "data"):
        (root / sub).mkdir(exist_ok=True)
    onnx.save(model, root / "reference" / "model.onnx")
    art = root / "onnxruntime-fp32"
    onnx.save(model, art / "model.onnx")
    data = {"x": np.random.default_rng(0).standard_normal((samples, 4)).astype(np.float32)}
    np.savez(root / "data" / "validation.npz", **data)
    io = {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}],
          "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", 3]}]}
    write_ort_fp32_manifest(root, name=name, source="toolchain.demo_ota", io=io, samples=samples)
    return root


def write_ort_fp32_manifest(root: Path, *, name: str, source: str, io: dict, samples: int) -> None:
    """``root/manifest.json`` for a hand-made build whose one artifact, ``onnxruntime-fp32``
    (``model.onnx``), reproduces ``reference/model.onnx`` exactly on ``data/validation.npz``."""
    import onnxruntime

    art = root / "onnxruntime-fp32"
    manifest = {
        "schema_version": 1,
        "model": {"name": name, "source": source, "source_kind": "onnx",
                  "source_sha256": sha256_file(root / "reference" / "model.onnx"), "opset": 17},
        "io": io, "calibration": None,
        "validation": {"file": "data/validation.npz", "sha256": sha256_file(root / "data" / "validation.npz"),
                       "samples": samples, "labels": False},
        "toolchain": {"edgeship": "0.1.0"}, "created_utc": "2026-11-26T17:00:00Z", "status": "ok",
        "artifacts": [{
            "id": "onnxruntime-fp32", "engine": "onnxruntime", "precision": "fp32", "status": "ok",
            "error": None, "dir": "onnxruntime-fp32", "model_file": "model.onnx",
            "files": [file_entry(art, art / "model.onnx")], "size_bytes": (art / "model.onnx").stat().st_size,
            "io": io, "engine_version": onnxruntime.__version__, "executed_precision": "fp32", "recipe": {},
            "verification": {"samples": samples, "max_abs_error": 0.0, "mean_abs_error": 0.0,
                             "cosine_min": 1.0, "cosine_mean": 1.0,
                             "tolerances": {"atol": 1e-4, "min_cosine": 0.9999}, "passed": True, "failures": []},
        }],
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))


def make_tiny_bundle(work: Path, *, release: int, scale: float = 1.0, name: str = "tiny"):
    """Package a tiny build as bundle ``release``; returns toolchain.package.PackageResult."""
    from toolchain.package import package_build

    build = make_tiny_build(work / f"build-{name}-{release}", name=name, scale=scale)
    return package_build(build, artifact_id="onnxruntime-fp32", version=f"1.{release}.0", release=release,
                         out_dir=work / "bundles", golden_samples=4)


def make_bad_bundle(work: Path, *, release: int, name: str = "tiny") -> Path:
    """A validly formed and signable bundle whose model does not reproduce its golden set.

    It imitates a botched build: the golden outputs come from one model, the shipped model
    file is another (weights negated), and model.json lists the shipped file's real hash, so
    only the device's gate (golden set vs tolerances) can catch it.
    """
    import io
    import tarfile

    import onnx

    from runtime.contracts.bundle import BundleInfo
    from runtime.fsutil import sha256_bytes
    from toolchain.package import _write_tar

    good = make_tiny_bundle(work / "bad-src", release=release, scale=3.0, name=name)
    with tarfile.open(good.path, "r:") as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    buf = io.BytesIO()
    onnx.save(_tiny_onnx(-3.0), buf)
    wrong = buf.getvalue()
    model_member = f"model/{good.info.model_file}"
    members[model_member] = wrong
    info = json.loads(members["model.json"])
    for f in info["files"]:
        if f["path"] == model_member:
            f["sha256"], f["bytes"] = sha256_bytes(wrong), len(wrong)
    bad = BundleInfo.from_json(info, where="demo bad bundle")
    members["model.json"] = bad.to_bytes()
    path, _ = _write_tar(work / "bundles", bad, members)
    return path


# --------------------------------------------------------------------------- the story
FLEET, DEVICE, GROUP = "demo", "edge-01", "lab"


class _Demo:
    def __init__(self, work: Path) -> None:
        import os
        import sys

        self.work = work
        self.py = sys.executable
        self.env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        self.procs: list = []
        self.broker = None

    def step(self, title: str) -> None:
        print(f"\n=== {title}", flush=True)

    def run(self, *argv: str, tool: str = "toolchain.cli", check: bool = True) -> int:
        import subprocess

        shown = ("edgeship" if tool == "toolchain.cli" else "edgeship-agent") + " " + " ".join(argv)
        print(f"$ {shown}", flush=True)
        r = subprocess.run([self.py, "-m", tool, *argv], env=self.env, capture_output=True, text=True)
        for line in (r.stdout + r.stderr).rstrip().splitlines():
            print(f"    {line}")
        if check and r.returncode != 0:
            raise RuntimeError(f"`{shown}` exited {r.returncode}")
        if not check:
            print(f"    (exit code {r.returncode})")
        return r.returncode

    def spawn(self, *argv: str, tool: str, log: str):
        import subprocess

        f = open(self.work / log, "w")
        p = subprocess.Popen([self.py, "-m", tool, *argv], env=self.env, stdout=f, stderr=subprocess.STDOUT)
        self.procs.append((p, f))
        return p

    def broker_args(self) -> list[str]:
        return ["--broker", f"127.0.0.1:{self.broker.port}"]

    def status(self) -> None:
        self.run("fleet", "status", "--fleet", FLEET, *self.broker_args())

    def infer(self, port: int) -> str:
        import urllib.request

        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                       "data": [1.0, 1.0, 1.0, 1.0]}]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/tiny/infer", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            out = json.loads(r.read())["outputs"][0]["data"]
        return "[" + ", ".join(f"{v:.2f}" for v in out) + "]"

    def close(self) -> None:
        import signal
        import subprocess

        for p, f in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
            f.close()
        if self.broker is not None:
            self.broker.stop()


def _wait(pred, timeout_s: float, what: str):
    import time

    from toolchain.fleet.errors import BrokerUnavailableError

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = pred()
        except (BrokerUnavailableError, OSError) as e:  # the peer is still starting
            value, last = None, e
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout_s}s waiting for {what}"
                       + (f" (last error: {type(last).__name__}: {last})" if last else ""))


def _device_online(port: int) -> bool:
    from toolchain.fleet.client import BrokerSettings, FleetClient

    with FleetClient(BrokerSettings(port=port)) as fc:
        view = fc.snapshot(FLEET, settle_s=0.3).get(DEVICE)
    return bool(view and view.status and view.status.get("online") and view.reported)


def story(work: Path) -> int:  # noqa: PLR0915 - a linear script is the clearest demo
    import shutil

    from toolchain.fleet.localbroker import Broker, free_port

    d = _Demo(work)
    try:
        d.step("1. a broker, signing keys, a TUF repository served over HTTP")
        d.broker = Broker(str(work / "broker")).start()
        print(f"mosquitto on 127.0.0.1:{d.broker.port}")
        keys, repo = work / "keys", work / "repo"
        d.run("keys", "init", "--dir", str(keys))
        d.env["EDGESHIP_KEYS"] = str(keys)  # push and fleet command sign with its operator key
        r1 = make_tiny_bundle(work / "models", release=1, scale=1.0)
        r2 = make_tiny_bundle(work / "models", release=2, scale=2.0)
        r3 = make_bad_bundle(work / "models", release=3)
        d.run("publish", str(r1.path), "--repo", str(repo), "--keys", str(keys), "--init")
        repo_port, http_port = free_port(), free_port()
        d.spawn("repo", "serve", str(repo), "--port", str(repo_port), tool="toolchain.cli", log="repo-serve.log")
        repo_url = f"http://127.0.0.1:{repo_port}"

        d.step("2. install the agent under a prefix (release 1 as its factory model) and start it with MQTT")
        prefix = work / "device"
        d.run("install", "--bundle", str(r1.path), "--prefix", str(prefix), "--port", str(http_port),
              tool="device_agent.cli")
        layout = InstallLayout.under(prefix)
        trust_root = StateDir(layout.state_dir).trust_root
        trust_root.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(keys / "root.json", trust_root)
        config = layout.config
        with open(config, "a") as f:
            f.write(f'\n[update]\nrepository_url = "{repo_url}"\ntrial_requests = 30\ntrial_duration_s = 3.0\n'
                    f'trial_probe_interval_s = 0.05\n'
                    f'\n[mqtt]\nfleet = "{FLEET}"\ndevice_id = "{DEVICE}"\nport = {d.broker.port}\n'
                    f'groups = ["{GROUP}"]\nmetrics_interval_s = 5.0\nheartbeat_s = 5.0\n')
        print(f"appended [update] (repository {repo_url}) and [mqtt] (fleet {FLEET}, device {DEVICE}, "
              f"group {GROUP}) to {config}")
        d.spawn("run", "--config", str(config), tool="device_agent.cli", log="agent.log")
        watch = d.spawn("fleet", "watch", "--fleet", FLEET, *d.broker_args(), tool="toolchain.cli", log="watch.log")
        _wait(lambda: _device_online(d.broker.port), 60, "the agent's birth message")
        print(f"agent serving on http://127.0.0.1:{http_port}; y(x=1) = {d.infer(http_port)}")
        d.status()

        d.step("3. push release 1 (the device already runs it: it reports commit without a download)")
        d.run("push", "--fleet", FLEET, "--group", GROUP, "--model", "tiny", "--release", "1",
              "--repo", repo_url, "--wait", "--timeout", "60", *d.broker_args())
        d.status()

        d.step("4. publish release 2 and push it: fetch, verify, stage, gate, switch, trial, commit")
        d.run("publish", str(r2.path), "--repo", str(repo), "--keys", str(keys))
        d.run("push", "--fleet", FLEET, "--group", GROUP, "--model", "tiny", "--release", "2",
              "--repo", repo_url, "--wait", "--timeout", "120", *d.broker_args())
        print(f"y(x=1) now = {d.infer(http_port)}  (release 2 has doubled weights)")
        d.status()

        d.step("5. a deliberately bad release 3: its model does not reproduce its golden set")
        d.run("publish", str(r3), "--repo", str(repo), "--keys", str(keys))
        rc = d.run("push", "--fleet", FLEET, "--group", GROUP, "--model", "tiny", "--release", "3",
                   "--repo", repo_url, "--wait", "--timeout", "120", *d.broker_args(), check=False)
        if rc == 0:
            raise RuntimeError("the bad release 3 was accepted; the gate should have refused it")
        print(f"still serving release 2: y(x=1) = {d.infer(http_port)}")
        d.status()

        d.step("6. a push of a release that was never published is refused before anything is sent")
        d.run("push", "--fleet", FLEET, "--device", DEVICE, "--model", "tiny", "--release", "9",
              "--repo", repo_url, *d.broker_args(), check=False)

        d.step("7. manual rollback over MQTT (cmd/rollback with response topic + correlation data)")
        d.run("fleet", "command", "rollback", "--fleet", FLEET, "--device", DEVICE, *d.broker_args())
        print(f"back on release 1: y(x=1) = {d.infer(http_port)}")
        _wait(lambda: _device_online(d.broker.port), 10, "reported state")
        d.status()

        d.step("8. what `edgeship fleet watch` printed meanwhile")
        watch.terminate()
        watch.wait(10)
        print((work / "watch.log").read_text().rstrip() or "(nothing)")
        print(f"\ndemo OK. Work directory (logs, repository, device prefix): {work}")
        return 0
    except Exception as e:
        print(f"\ndemo FAILED: {e}\nlogs in {work} (agent.log, repo-serve.log)")
        return 1
    finally:
        d.close()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import shutil
    import tempfile

    from toolchain.fleet.localbroker import MOSQUITTO

    ap = argparse.ArgumentParser(prog="python -m toolchain.demo_ota", description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", help="work directory (default: a fresh temp directory)")
    args = ap.parse_args(argv)
    if MOSQUITTO is None:
        print("demo-ota needs mosquitto: apt-get install mosquitto (`make demo-ota` does)")
        return 1
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="edgeship-demo-ota-"))
    if args.work and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    return story(work)


if __name__ == "__main__":
    import sys

    sys.exit(main())
