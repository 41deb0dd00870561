"""`make demo-loop`: the lifecycle loop on one machine, with real processes (docs/capture.md).

A mosquitto broker, a TUF repository served over HTTP, and three agents installed under
prefixes (`edgeship-agent run` with [update], [mqtt], [drift] and [capture]) serving the digits
CNN (release 1: weights trained on the sklearn digits and saved as a checkpoint, its drift
baseline from the digits validation images). Half of the validation digits feed the traffic;
the other half is held out of every step, to judge the releases at the end. Then:

1. ordinary digits traffic: the drift scores stay under their thresholds;
2. traffic shifts (the digits inverted, with a little sensor noise; each request labelled by
   the demo with ``edgeship_expected``): drift alarms; the alarms and a 50% sample rule capture requests;
3. `edgeship fleet capture pull --since <the shift>` fetches the captures (signed pull over MQTT),
   the devices delete what was acknowledged; `edgeship data inspect` and `edgeship data split`;
4. retrain: release 1's weights are fine-tuned (``toolchain.models.digits.fine_tune``, plain
   torch, seeded, a few seconds) on the labelled calibration part of the split
   (``toolchain.data.load_labelled``) mixed with the original training digits;
5. `edgeship compile ref:digits --arg weights=<fine-tuned checkpoint>` builds release 2 with the
   captured data as calibration and labelled validation data (its manifest records the capture
   set's hash, devices and time range); release 2 goes on only if it beats release 1 on the
   held-out inverted digits by at least 30 points and loses at most 3 on the held-out normal
   digits (both artifacts run by ONNX Runtime); `edgeship package` takes the new drift
   baseline from it; `edgeship publish`;
6. `edgeship rollout start` moves the fleet in waves (1 device, then the rest) while the
   shifted traffic goes on;
7. the drift scores on release 2 fall back under the thresholds; a table prints both
   releases' accuracy on the held-out digits (inverted and normal) and the worst PSI.

Usage: ``python -m toolchain.demo_loop [--work DIR] [--devices 3]``. Exit 0 when every step
held, 1 naming the step that did not.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from toolchain.demo_ota import _Demo, _wait

FLEET, GROUP = "loop", "lab"
PSI_THRESHOLD = 0.25  # edgeship package's default drift alarm threshold (both releases use it)
NOISE = 0.05  # std of the per-request noise on the shifted digits (pixels in [-1, 1])
MIN_GAIN_SHIFTED = 0.30  # release 2 must beat release 1 by this much on held-out inverted digits
MAX_LOSS_NORMAL = 0.03  # ... and lose at most this much on held-out normal digits
DRIFT = ("\n[drift]\ncheck_every_requests = 50\nsample_every_requests = 1\ncheck_interval_s = 2.0\n"
         "window_checks = 5\nmin_samples = 150\nsustain_checks = 2\n")
CAPTURE = ("\n[capture]\nenabled = true\nuse_bundle_rules = false\n"
           "[[capture.rules]]\nname = \"on-drift\"\ntrigger = \"drift\"\nrate = 1.0\ndrift_samples = 64\n"
           "priority = 2\n"
           "[[capture.rules]]\nname = \"sample\"\ntrigger = \"sample\"\nrate = 0.5\nmax_count = 1000\n")


class Traffic:
    """One thread per device posting digits (OIP JSON, labelled with ``edgeship_expected``)."""

    def __init__(self, ports: list[int], x: np.ndarray, y: np.ndarray, *, name: str, rate_per_s: float = 40.0):
        self.ports, self.x, self.y, self.name = ports, x, y, name
        self.rate = rate_per_s
        self.noise = 0.0  # sensor noise (std) added per request: shifted traffic is not 450 images repeated
        self.sent = {p: 0 for p in ports}
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(p, i), daemon=True) for i, p in enumerate(ports)]

    def set(self, x: np.ndarray, y: np.ndarray, *, noise: float = 0.0) -> None:
        self.x, self.y, self.noise = x, y, noise

    def start(self) -> "Traffic":
        for t in self._threads:
            t.start()
        return self

    def _run(self, port: int, seed: int) -> None:
        import httpx

        rng = np.random.default_rng(seed)
        with httpx.Client(timeout=10) as c:
            while not self._stop.is_set():
                t0 = time.monotonic()
                i = int(rng.integers(0, len(self.x)))
                img = self.x[i][None]
                if self.noise:
                    img = (img + rng.normal(0.0, self.noise, img.shape)).astype(np.float32)
                body = {"inputs": [{"name": "image", "shape": list(img.shape), "datatype": "FP32",
                                    "data": img.reshape(-1).tolist()}],
                        "parameters": {"edgeship_expected": int(self.y[i])}}
                try:
                    r = c.post(f"http://127.0.0.1:{port}/v2/models/digits/infer", json=body)
                    self.sent[port] += 1
                    self.errors += r.status_code != 200
                except httpx.HTTPError:
                    self.errors += 1  # an agent switching models or restarting: counted, the demo goes on
                self._stop.wait(max(0.0, 1.0 / self.rate - (time.monotonic() - t0)))

    def wait_sent(self, n: int, timeout_s: float) -> None:
        _wait(lambda: min(self.sent.values()) >= n, timeout_s, f"{n} requests per device")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


def _drift(d: _Demo, *, quiet: bool = False) -> dict:
    """`edgeship fleet drift --json`, printed as its table unless ``quiet``."""
    import subprocess

    r = subprocess.run([d.py, "-m", "toolchain.cli", "fleet", "drift", "--fleet", FLEET, "--json", *d.broker_args()],
                       env=d.env, capture_output=True, text=True, check=True)
    doc = json.loads(r.stdout)
    if not quiet:
        for row in doc["devices"]:
            print(f"    {row['device']}: {row['model']} r{row['release']}  checks {row['checks']}  worst PSI "
                  f"{row['worst_psi']:.3f} ({row['worst']})  alarms: {', '.join(row['alarms']) or '-'}")
    return {row["device"]: row for row in doc["devices"]}


def _compile(d: _Demo, out: Path, weights: Path, *extra: str) -> Path:
    d.run("compile", "ref:digits", "--arg", f"weights={weights}", "--targets", "onnxruntime", "--precisions", "fp32",
          "--out", str(out), "--quiet", *extra)
    return out / "digits"


def _retrain(work: Path, train_dir: Path, weights1: Path) -> Path:
    """Fine-tune release 1's checkpoint on the labelled captures in ``train_dir`` (the user's step)."""
    import torch

    from toolchain.data import load_labelled
    from toolchain.models import digits

    inputs, labels = load_labelled(train_dir)
    t0 = time.monotonic()
    state = digits.fine_tune(torch.load(weights1, weights_only=True), inputs[digits.INPUT_NAME], labels, seed=0)
    out = work / "release2.pt"
    torch.save(state, out)
    print(f"fine-tuned release 1's weights on {len(labels)} captured labelled samples (per class "
          f"{np.bincount(labels, minlength=10).tolist()}) mixed with the digits training split, "
          f"in {time.monotonic() - t0:.1f} s -> {out}")
    return out


def _accuracy(build: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a build's onnxruntime-fp32 artifact (what the devices run) on ``x``."""
    from runtime import open_model

    manifest = json.loads((build / "manifest.json").read_text())
    art = next(a for a in manifest["artifacts"] if a["id"] == "onnxruntime-fp32")
    s = open_model(build / art["dir"] / art["model_file"], threads=1)
    try:
        logits = next(iter(s.run({"image": x}).values()))
    finally:
        s.close()
    return float((logits.argmax(1) == y).mean())


def _train_release1(work: Path) -> Path:
    """Release 1's weights: the digits CNN trained (seeded) and saved as the user's checkpoint."""
    import torch

    from toolchain.models import digits

    out = work / "release1.pt"
    torch.save(digits.trained_state(), out)
    return out


def _summary(acc: dict[str, dict[str, float]], psi1: float, psi2: float, *, n_held: int) -> str:
    from toolchain.console import format_table

    rows = [(f"accuracy, held-out inverted digits ({n_held})", f"{acc['shifted']['r1']:.2%}",
             f"{acc['shifted']['r2']:.2%}", f"{(acc['shifted']['r2'] - acc['shifted']['r1']) * 100:+.1f} pt"),
            (f"accuracy, held-out normal digits ({n_held})", f"{acc['normal']['r1']:.2%}",
             f"{acc['normal']['r2']:.2%}", f"{(acc['normal']['r2'] - acc['normal']['r1']) * 100:+.1f} pt"),
            ("worst drift PSI under the shifted traffic", f"{psi1:.3f}", f"{psi2:.3f}", f"{psi2 - psi1:+.3f}")]
    return format_table(["", "release 1", "release 2 (fine-tuned)", "change"], rows, align="lrrr")


def _judge(acc: dict[str, dict[str, float]]) -> None:
    """Release 2 goes on only when clearly better on the shifted digits and not worse on the normal."""
    gain = acc["shifted"]["r2"] - acc["shifted"]["r1"]
    loss = acc["normal"]["r1"] - acc["normal"]["r2"]
    if gain < MIN_GAIN_SHIFTED:
        raise RuntimeError(f"release 2 gains {gain * 100:+.1f} points on the held-out inverted digits "
                           f"(needs >= {MIN_GAIN_SHIFTED * 100:+.0f}); not published")
    if loss > MAX_LOSS_NORMAL:
        raise RuntimeError(f"release 2 loses {loss * 100:.1f} points on the held-out normal digits "
                           f"(at most {MAX_LOSS_NORMAL * 100:.0f} allowed); not published")


def _package(d: _Demo, build: Path, release: int, out: Path) -> Path:
    d.run("package", str(build), "--artifact", "onnxruntime-fp32", "--version", f"1.{release}.0",
          "--release", str(release), "--out", str(out))
    return next(out.glob(f"digits-{release}-*.tar"))


def _install(d: _Demo, i: int, bundle: Path, keys: Path, repo_url: str) -> tuple[int, Path]:
    from toolchain.fleet.localbroker import free_port

    port, prefix = free_port(), d.work / f"device-{i}"
    device = f"edge-{i:02d}"
    d.run("install", "--bundle", str(bundle), "--prefix", str(prefix), "--port", str(port),
          "--trust-root", str(keys / "root.json"), tool="device_agent.cli")
    from runtime.contracts.statedir import InstallLayout

    config = InstallLayout.under(prefix).config
    with open(config, "a") as f:
        f.write(f'\n[update]\nrepository_url = "{repo_url}"\ntrial_requests = 20\ntrial_duration_s = 2.0\n'
                f'trial_probe_interval_s = 0.05\n'
                f'\n[mqtt]\nfleet = "{FLEET}"\ndevice_id = "{device}"\nport = {d.broker.port}\n'
                f'groups = ["{GROUP}"]\nmetrics_interval_s = 1.0\nheartbeat_s = 2.0\n' + DRIFT + CAPTURE)
    d.spawn("run", "--config", str(config), tool="device_agent.cli", log=f"agent-{i}.log")
    return port, prefix


def _online(broker_port: int, n: int, release: int | None = None) -> bool:
    from toolchain.fleet.client import BrokerSettings, FleetClient

    with FleetClient(BrokerSettings(port=broker_port)) as fc:
        views = fc.snapshot(FLEET, settle_s=0.3)
    ok = [v for v in views.values() if v.status and v.status.get("online") and v.reported
          and (release is None or (v.reported.get("active") or {}).get("release") == release)]
    return len(ok) >= n


def story(work: Path, *, devices: int = 3) -> int:  # noqa: PLR0915 - a linear script is the clearest demo
    from toolchain.fleet.localbroker import Broker, free_port

    d = _Demo(work)
    traffic = None
    step = "setup"
    t_start = time.monotonic()

    def stage(title: str) -> None:
        nonlocal step
        step = title
        d.step(f"{title}  [{time.monotonic() - t_start:.0f} s]")

    try:
        stage("1. broker, keys, the digits CNN compiled and packaged as release 1, a TUF repository")
        d.broker = Broker(str(work / "broker")).start()
        keys, repo = work / "keys", work / "repo"
        d.run("keys", "init", "--dir", str(keys))
        d.env["EDGESHIP_KEYS"] = str(keys)
        weights1 = _train_release1(work)
        build1 = _compile(d, work / "build1", weights1)
        r1 = _package(d, build1, 1, work / "bundles")
        d.run("publish", str(r1), "--repo", str(repo), "--keys", str(keys), "--init")
        repo_port = free_port()
        d.spawn("repo", "serve", str(repo), "--port", str(repo_port), tool="toolchain.cli", log="repo-serve.log")
        repo_url = f"http://127.0.0.1:{repo_port}"

        stage(f"2. {devices} agents installed with [update] [mqtt] [drift] [capture], serving release 1")
        ports = [_install(d, i + 1, r1, keys, repo_url)[0] for i in range(devices)]
        _wait(lambda: _online(d.broker.port, devices), 90, f"{devices} agents online")
        d.run("fleet", "status", "--fleet", FLEET, *d.broker_args())

        with np.load(build1 / "data" / "validation.npz") as z:
            x, y = z["image"], z["__labels__"]
        # even validation images feed the traffic (normal, then inverted); odd ones are held out of
        # every step (never sent, captured or trained on) to judge the two releases at the end
        pool, held = np.arange(0, len(x), 2), np.arange(1, len(x), 2)
        noise = np.random.default_rng(7).normal(0.0, NOISE, x[held].shape)
        held_out = {"shifted": ((-x[held] + noise).astype(np.float32), y[held]), "normal": (x[held], y[held])}
        stage("3. ordinary digits traffic: drift stays quiet")
        traffic = Traffic(ports, x[pool], y[pool], name="digits").start()
        traffic.wait_sent(250, 120)
        time.sleep(3)
        before = _drift(d)
        if any(r["alarms"] for r in before.values()):
            raise RuntimeError("drift alarms on ordinary traffic")

        stage("4. the traffic shifts: inverted digits (the demo labels each request)")
        shifted, ys = (-x[pool]).copy(), y[pool]
        traffic.set(shifted, ys, noise=NOISE)
        shift_ms = int(time.time() * 1000)
        n0 = min(traffic.sent.values())
        alarmed = _wait(lambda: (lambda doc: doc if all(r["alarms"] for r in doc.values()) and len(doc) == devices
                                 else None)(_drift(d, quiet=True)), 120, "drift alarms on every device")
        print(f"drift alarms on all {devices} devices after ~{min(traffic.sent.values()) - n0} shifted requests each:")
        _drift(d)
        # the sample rule keeps collecting labelled shifted requests: enough for a class-mix baseline
        # whose own noise stays well under the PSI threshold (~350 validation samples)
        traffic.wait_sent(n0 + 450, 180)
        worst_before = max(r["worst_psi"] for r in alarmed.values())

        stage("5. pull the captures made since the shift (signed pull over MQTT; the devices delete what "
              "was acknowledged)")
        traffic.stop()
        time.sleep(1.5)  # the agents' writers and indexes settle
        caps = work / "captures"
        d.run("fleet", "capture", "pull", "--fleet", FLEET, "--since", str(shift_ms), "--out", str(caps),
              *d.broker_args())
        d.run("data", "inspect", str(caps))
        split = work / "split"
        d.run("data", "split", str(caps), "--out", str(split), "--validation-share", "0.5", "--labelled-validation")

        stage("6. retrain: release 1's weights fine-tuned on the pulled labelled captures (calibration part)")
        weights2 = _retrain(work, split / "calibration", weights1)

        stage("7. release 2: the fine-tuned model compiled with the captured data as calibration and validation "
              "data; judged against release 1 on the held-out digits before it is published")
        build2 = _compile(d, work / "build2", weights2, "--calibration", str(split / "calibration"),
                          "--validation", str(split / "validation"))
        prov = json.loads((build2 / "manifest.json").read_text()).get("data_provenance")
        print("manifest data_provenance: " + json.dumps(prov, indent=None)[:600])
        acc = {k: {"r1": _accuracy(build1, *xy), "r2": _accuracy(build2, *xy)} for k, xy in held_out.items()}
        print(f"held-out inverted digits: release 1 {acc['shifted']['r1']:.2%}, release 2 {acc['shifted']['r2']:.2%}; "
              f"held-out normal digits: release 1 {acc['normal']['r1']:.2%}, release 2 {acc['normal']['r2']:.2%}")
        _judge(acc)
        r2 = _package(d, build2, 2, work / "bundles")
        d.run("publish", str(r2), "--repo", str(repo), "--keys", str(keys))

        stage("8. roll release 2 out in waves (1 device, then the rest) under the shifted traffic")
        traffic = Traffic(ports, shifted, ys, name="inverted")
        traffic.set(shifted, ys, noise=NOISE)
        traffic.start()
        d.run("rollout", "start", "--id", "loop-r2", "--fleet", FLEET, "--model", "digits", "--release", "2",
              "--group", GROUP, "--waves", "1,rest", "--bake", "2", "--min-requests", "40", "--min-device-s", "2",
              "--min-windows", "2", "--install-timeout", "60", "--max-p95-ratio", "5", "--repo", str(repo),
              "--keys", str(keys), "--journal-dir", str(work / "rollouts"), *d.broker_args())
        _wait(lambda: _online(d.broker.port, devices, release=2), 60, "every device on release 2")
        d.run("fleet", "status", "--fleet", FLEET, *d.broker_args())

        stage("9. drift on release 2 under the same shifted traffic")
        after = _wait(lambda: (lambda doc: doc if len(doc) == devices and all(
            r["release"] == 2 and r["checks"] >= 3 and not r["alarms"] and r["worst_psi"] < PSI_THRESHOLD
            for r in doc.values()) else None)(_drift(d, quiet=True)), 180, "drift scores under the thresholds on release 2")
        _drift(d)
        worst_after = max(r["worst_psi"] for r in after.values())
        print(f"\nworst PSI across the fleet: {worst_before:.3f} on release 1 (alarmed) -> {worst_after:.3f} on "
              f"release 2 (no alarm, every device under {PSI_THRESHOLD}); {sum(traffic.sent.values())} requests "
              f"during the rollout, {traffic.errors} failed")
        print("\n" + _summary(acc, worst_before, worst_after, n_held=len(held)))
        print(f"\ndemo-loop OK in {time.monotonic() - t_start:.0f} s. Work directory: {work}")
        return 0
    except Exception as e:
        print(f"\ndemo-loop FAILED at step {step!r}: {type(e).__name__}: {e}\nlogs in {work} (agent-N.log, "
              "repo-serve.log)")
        return 1
    finally:
        if traffic is not None:
            traffic.stop()
        d.close()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import shutil
    import tempfile

    from toolchain.fleet.localbroker import MOSQUITTO

    ap = argparse.ArgumentParser(prog="python -m toolchain.demo_loop", description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", help="work directory (default: a fresh temp directory)")
    ap.add_argument("--devices", type=int, default=3)
    args = ap.parse_args(argv)
    if MOSQUITTO is None:
        print("demo-loop needs mosquitto: apt-get install mosquitto (`make demo-loop` does)")
        return 1
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="edgeship-demo-loop-"))
    if args.work and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    return story(work, devices=args.devices)


if __name__ == "__main__":
    import sys

    sys.exit(main())
