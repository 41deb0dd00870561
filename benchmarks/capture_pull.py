"""Capture pull throughput (issue 16): MB/s over MQTT chunks and over HTTP PUT, one run.

A real `edgeship-agent run` ([mqtt], [capture] with one sample rule at rate 1.0) serving the
demo's tiny model on 127.0.0.1, the real mosquitto, and (HTTP) the small object store. The
agent is filled with ``--files`` captures of ``--rows`` rows each; the operator's DevicePull
(what `edgeship fleet capture pull` runs) fetches them, verifies every file's sha256 and acks
them; the device deletes them. Then the same again over HTTP. Throughput = capture bytes
written to the output set / the pull's wall time (rounds, offers, acks included).

Verdicts by the shared rules of ``benchmarks/_verdict.py`` (:func:`verdicts`, pure): the issue
sets no throughput target, so each transport's MB/s is an informational row (with the load
during the run); judged exactly are the captures that did not come back exactly once
(verified by sha256 in the output set) and those left on the device after the pull. Exit 1
when either is above 0, else 0 (3 only if nothing could be judged).

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

from _verdict import AnyLoad, LoadMonitor, Report, Target  # noqa: E402

NOT_ONCE = Target("captures not pulled back exactly once (verified)", "<=", 0, "", ".0f", load="none")
LEFT = Target("captures left on the device after the pull", "<=", 0, "", ".0f", load="none")


def verdicts(results: list[dict], *, load: AnyLoad | None, title: str = "") -> Report:
    """The verdict rows (pure). ``results``: one dict per transport: ``name``, ``expected``
    (captures on the device), ``received`` (files the pull wrote), ``verified`` (captures the
    output set holds, verified), ``left`` (captures still listed on the device), ``mb_s``."""
    report = Report(title)
    for r in results:
        report.info(f"pull throughput, {r['name']}", r["mb_s"], unit="MB/s", fmt=".2f", load=load,
                    note="no target (issue 16)")
    if not results:  # no pull finished: nothing shows the captures came back
        report.judge(NOT_ONCE, [])
        return report
    report.judge(NOT_ONCE, sum(max(abs(r["expected"] - r["received"]), abs(r["expected"] - r["verified"]))
                               for r in results), exact=True)
    report.judge(LEFT, sum(r["left"] for r in results), exact=True)
    return report


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


def _held(capdir: Path) -> list:
    """The captures the device's store lists (its index)."""
    from runtime.contracts.capture import fileformat as ff

    try:
        return list(ff.read_index(capdir).entries)
    except ff.CaptureFormatError:
        return []


def _fill(url: str, capdir: Path, files: int, rows: int) -> int:
    import httpx

    rng = np.random.default_rng(0)
    have = len(_held(capdir))
    with httpx.Client(timeout=30) as c:
        for _ in range(files):
            x = rng.normal(size=(rows, 4)).astype(np.float32)
            body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
            r = c.post(f"{url}/v2/models/tiny/infer", json=body)
            r.raise_for_status()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_held(capdir)) < have + files:
        time.sleep(0.1)
    return sum(e.bytes for e in _held(capdir))


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
    results = []
    try:
        root = init_keys(keys_dir=work / "keys")
        signer = OperatorSigner.from_keys_dir(work / "keys")
        proc, url, capdir = _agent(work, broker.port, root)
        print(f"capture pull from a real agent on 127.0.0.1 ({args.files} captures of {args.rows} rows each; "
              f"load average {os.getloadavg()[0]:.2f})")
        with LoadMonitor() as mon, ObjectStore(work / "objects") as store:
            upload = f"{store.url}/captures/{{device}}/{{id}}.npz"
            for name, opts in (("MQTT chunks (96 KiB)", {}),
                               ("HTTP PUT (object store)", {"transport": Transport.HTTP, "upload_url": upload})):
                size = _fill(url, capdir, args.files, args.rows)
                stats, n = _pull(broker.port, signer, work / f"out-{len(name)}", **opts)
                left = len(_held(capdir))
                rate = stats.bytes / stats.seconds / 1e6 if stats.seconds else float("nan")
                results.append({"name": name, "expected": args.files, "received": stats.files, "verified": n,
                                "left": left, "mb_s": rate})
                print(f"  {name:<24} {stats.files} files, {stats.bytes / 1e6:.2f} MB (on device {size / 1e6:.2f} MB) "
                      f"in {stats.seconds:.2f} s over {stats.rounds} rounds: {rate:.2f} MB/s; left on the device "
                      f"{left}")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    rep = verdicts(results, load=mon.load(), title="verdicts (benchmarks/_verdict.py rules):")
    rep.print()
    return rep.exit_code()


if __name__ == "__main__":
    sys.exit(main())
