"""Capture pull throughput (issue 16): MB/s over MQTT chunks and over HTTP PUT, one run.

A real `edgeship-agent run` ([mqtt], [capture] with one sample rule at rate 1.0) serving the
demo's tiny model on 127.0.0.1, the real mosquitto, and (HTTP) the small object store. The
agent is filled with ``--files`` captures of ``--rows`` rows each; the operator's DevicePull
(what `edgeship fleet capture pull` runs) fetches them, verifies every file's sha256 and acks
them; the device deletes them. Then the same again over HTTP. Throughput = capture bytes
written to the output set / the pull's wall time (rounds, offers, acks included).

The issue sets no throughput target: the figures are printed with the load average. Exit 1
when a pull did not bring every capture back exactly once (verified), else 0.

Usage: ``python benchmarks/capture_pull.py [--files 40] [--rows 4096]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _agent(work: Path, broker_port: int, root_json: Path):
    import httpx

    from _mqtt_setup import install_tiny
    from toolchain.fleet.localbroker import free_port

    state = install_tiny(work)
    port = free_port()
    cfg = work / "agent.toml"
    cfg.write_text("\n".join([
        "[agent]", f"state_dir = {json.dumps(str(state))}", "[serving]", f"port = {port}",
        "[mqtt]", 'fleet = "bench"', 'device_id = "dev1"', f"port = {broker_port}",
        f"operator_root = {json.dumps(str(root_json))}", "metrics_interval_s = 60.0",
        "[capture]", "enabled = true", "use_bundle_rules = false", f"disk_budget_bytes = {1 << 30}",
        "min_free_bytes = 0", "[[capture.rules]]", 'name = "all"', 'trigger = "sample"', "rate = 1.0",
        "max_count = 10000", f"max_bytes = {1 << 30}"]) + "\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(work / "agent.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "device_agent.cli", "run", "--config", str(cfg)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=0.5).status_code == 200:
                return proc, url, state / "capture"
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the agent did not get ready (log: {work / 'agent.log'})")


def _fill(url: str, capdir: Path, files: int, rows: int) -> int:
    import httpx

    rng = np.random.default_rng(0)
    have = len(list(capdir.rglob("*.npz")))
    with httpx.Client(timeout=30) as c:
        for _ in range(files):
            x = rng.normal(size=(rows, 4)).astype(np.float32)
            body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
            r = c.post(f"{url}/v2/models/tiny/infer", json=body)
            r.raise_for_status()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(capdir.rglob("*.npz"))) < have + files:
        time.sleep(0.1)
    time.sleep(1.5)  # listed in the store's index
    return sum(p.stat().st_size for p in capdir.rglob("*.npz"))


def _pull(broker_port: int, signer, out: Path, **opts):
    from runtime.contracts.mqtt.topics import DEFAULT_PREFIX
    from toolchain.data.captures import SetWriter, load
    from toolchain.fleet.capture.puller import DevicePull, PullOptions
    from toolchain.fleet.client import BrokerSettings, FleetClient

    writer = SetWriter(out, fresh=False)
    settings = BrokerSettings(host="127.0.0.1", port=broker_port)
    pull = DevicePull(connect=lambda: FleetClient(settings), signer=signer, fleet="bench", device="dev1",
                      prefix=DEFAULT_PREFIX, writer=writer, options=PullOptions(timeout_s=300, **opts))
    stats = pull.run()
    writer.commit()
    return stats, len(load(out))  # load verifies every file's sha256


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--rows", type=int, default=4096, help="rows per capture (7 float32 per row: x and y)")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.ERROR)
    from runtime.contracts.capture.pull import Transport
    from toolchain.fleet.capture.objstore import ObjectStore
    from toolchain.fleet.localbroker import Broker
    from toolchain.fleet.signer import OperatorSigner
    from toolchain.ota.keys import init_keys

    work = Path(tempfile.mkdtemp(prefix="edgeship-bench-pull-"))
    broker = Broker(str(work / "broker")).start()
    proc = None
    ok = True
    try:
        root = init_keys(keys_dir=work / "keys")
        signer = OperatorSigner.from_keys_dir(work / "keys")
        proc, url, capdir = _agent(work, broker.port, root)
        print(f"capture pull from a real agent on 127.0.0.1 ({args.files} captures of {args.rows} rows each; "
              f"load average {os.getloadavg()[0]:.2f})")
        with ObjectStore(work / "objects") as store:
            upload = f"{store.url}/captures/{{device}}/{{id}}.npz"
            for name, opts in (("MQTT chunks (96 KiB)", {}),
                               ("HTTP PUT (object store)", {"transport": Transport.HTTP, "upload_url": upload})):
                size = _fill(url, capdir, args.files, args.rows)
                stats, n = _pull(broker.port, signer, work / f"out-{len(name)}", **opts)
                left = len(list(capdir.rglob("*.npz")))
                rate = stats.bytes / stats.seconds / 1e6 if stats.seconds else float("nan")
                good = n == args.files and stats.files == args.files and left == 0
                ok &= good
                print(f"  {name:<24} {stats.files} files, {stats.bytes / 1e6:.2f} MB (on device {size / 1e6:.2f} MB) "
                      f"in {stats.seconds:.2f} s over {stats.rounds} rounds: {rate:.2f} MB/s; left on the device "
                      f"{left}" + ("" if good else "  <- NOT every capture came back exactly once"))
        print(f"load average after: {os.getloadavg()[0]:.2f} (no throughput target; "
              f"{'every capture pulled once, verified' if ok else 'FAIL: captures missing or duplicated'})")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
