"""Capture pull end to end on real processes: a real `edgeship-agent run` with [mqtt] and
[capture], the real mosquitto, the operator's DevicePull, and (HTTP) the small object store
on 127.0.0.1. Each pull is interrupted (a broker restart mid-file, refused uploads and an
agent killed and restarted mid-round); afterwards every capture the device held is in the
output set exactly once, verified by hash, and the device deleted only what was acked."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

CAPTURE = "\n".join([
    "[capture]", "enabled = true", "use_bundle_rules = false",
    "[[capture.rules]]", 'name = "all"', 'trigger = "sample"', "rate = 1.0", "max_count = 1000",
])
N_REQUESTS = 12
BATCH = 128  # rows per request: a capture file of a few KiB


def _device_ids(agent) -> set[str]:
    from capturehelpers import device_ids

    return device_ids(agent.state / "capture")


def _fill(agent, n: int = N_REQUESTS, *, batch: int = BATCH) -> set[str]:
    rng = np.random.default_rng(0)
    with httpx.Client(timeout=10) as c:
        for _ in range(n):
            agent.infer(c, rng.normal(size=(batch, 4)).astype(np.float32))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(_device_ids(agent)) < n:
        time.sleep(0.1)
    ids = _device_ids(agent)
    assert len(ids) == n, f"the agent wrote {len(ids)} captures of {n} requests"
    return ids


class AckLog:
    """The operator's signer, recording every id it acks (the device may delete only these)."""

    def __init__(self, signer) -> None:
        self.signer, self.acked = signer, set()

    def sign(self, **kw):
        self.acked.update(kw["body"].get("ack") or ())
        return self.signer.sign(**kw)


def _pull(broker, keys, device, out: Path, *, on_data, **opts):
    from runtime.contracts.mqtt.topics import DEFAULT_PREFIX
    from toolchain.data.captures import SetWriter
    from toolchain.fleet.capture.puller import DevicePull, PullOptions
    from toolchain.fleet.client import BrokerSettings, FleetClient

    settings = BrokerSettings(host="127.0.0.1", port=broker.port)
    signer = AckLog(keys.signer)
    writer = SetWriter(out, fresh=False)
    pull = DevicePull(connect=lambda: FleetClient(settings), signer=signer, fleet="f1", device=device,
                      prefix=DEFAULT_PREFIX, writer=writer, options=PullOptions(stall_s=2.0, timeout_s=90, **opts),
                      on_data=on_data)
    return pull, signer, writer


def _check_set(out: Path, ids: set[str]) -> None:
    from toolchain.data.captures import load

    caps = load(out)  # verifies every file's sha256 and size against the index
    got = [e.meta.id for e, _ in caps]
    assert sorted(got) == sorted(ids), "each capture exactly once"


def test_mqtt_pull_survives_a_broker_restart_mid_file(capture_agent, broker, operator_keys, tmp_path):
    agent = capture_agent(CAPTURE)
    ids = _fill(agent, batch=1024)  # ~22 KiB a file: ~22 chunks of 1 KiB, so a restart cuts one
    seen = {"chunks": 0, "restarted": False, "held_at_restart": None}

    def on_data(doc):
        if doc.get("type") == "chunk":
            seen["chunks"] += 1
            # the second file's first chunk: the broker goes away with that file partly received
            if not seen["restarted"] and seen["chunks"] > 1 and doc["offset"] == 0 and doc["bytes"] > 3 * 1024:
                seen["restarted"] = True
                seen["held_at_restart"] = _device_ids(agent)
                broker.restart()

    pull, signer, writer = _pull(broker, operator_keys, "cap1", tmp_path / "out", on_data=on_data, chunk_bytes=1024)
    stats = pull.run()
    writer.commit()
    assert seen["restarted"], "the interruption happened"
    # nothing was deleted that had not been acked, before and after the interruption
    assert ids - seen["held_at_restart"] <= signer.acked
    assert stats.retries >= 1 and stats.files == len(ids), stats.to_json()
    assert stats.resumed_files >= 1, stats.to_json()  # the partial file continued from its offset
    _check_set(tmp_path / "out", ids)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _device_ids(agent):
        time.sleep(0.1)
    assert not _device_ids(agent), "the device deleted what was received and acked"
    assert signer.acked == ids


def test_http_pull_with_refused_uploads_and_an_agent_restart(capture_agent, broker, operator_keys, tmp_path):
    from toolchain.fleet.capture.objstore import ObjectStore
    from runtime.contracts.capture.pull import Transport

    agent = capture_agent(CAPTURE)
    ids = _fill(agent)
    store = ObjectStore(tmp_path / "objects").start()
    store.fail_next(2)  # the first two PUTs are cut off: reported failed, not acked, offered again
    seen = {"uploaded": 0, "killed": False, "held": None}
    restarted = threading.Event()

    def restart_agent():
        agent.kill()
        agent.start()
        restarted.set()

    def on_data(doc):
        if doc.get("type") == "uploaded" and not doc.get("error"):
            seen["uploaded"] += 1
            if seen["uploaded"] == 5 and not seen["killed"]:  # mid-round: the agent dies and comes back
                seen["killed"] = True
                seen["held"] = _device_ids(agent)
                threading.Thread(target=restart_agent, daemon=True).start()

    url = f"http://127.0.0.1:{store.port}/captures/{{device}}/{{id}}.npz"
    try:
        pull, signer, writer = _pull(broker, operator_keys, "cap1", tmp_path / "out", on_data=on_data,
                                     transport=Transport.HTTP, upload_url=url, max_files=4)
        stats = pull.run()
        writer.commit()
    finally:
        store.stop()
    assert seen["killed"] and restarted.is_set()
    assert store.broken == 2
    assert ids - seen["held"] <= signer.acked
    assert stats.files == len(ids) and stats.rounds >= 4, stats.to_json()
    _check_set(tmp_path / "out", ids)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _device_ids(agent):
        time.sleep(0.1)
    assert not _device_ids(agent)
    assert signer.acked == ids


RING = "\n".join([
    "[capture]", "enabled = true", "use_bundle_rules = false", "write_interval_s = 0.0", "index_interval_s = 0.2",
    "[[capture.rules]]", 'name = "ring"', 'trigger = "sample"', "rate = 1.0", "max_count = 6",
])


def test_captures_evicted_between_offer_and_upload_are_reported_skipped(capture_agent, broker, operator_keys,
                                                                        tmp_path, capsys):
    """`edgeship fleet capture pull` as a user runs it: the first upload of the round is held
    while the device's writer keeps capturing, so its ring (max_count 6) evicts the three oldest
    captures, one already read and being uploaded, two offered and not read yet. The device
    reports those two in done.skipped; the operator counts them per device (table, --json),
    not as failed, and the set holds every other capture exactly once."""
    import json

    from runtime.contracts.capture import fileformat as ff
    from toolchain.cli import main as edgeship
    from toolchain.fleet.capture.cli import _print
    from toolchain.fleet.capture.objstore import ObjectStore

    agent = capture_agent(RING)
    _fill(agent, 6)
    order = [e.meta.id for e in sorted(ff.read_index(agent.state / "capture").entries,
                                       key=lambda e: (e.meta.ts_ms, e.meta.id))]  # the offer's order
    store = ObjectStore(tmp_path / "objects").start()
    held: dict = {}

    def before_put(key):  # the device waits for this answer: meanwhile its writer evicts
        if held:
            return
        held["first_put"] = key
        rng = np.random.default_rng(1)
        with httpx.Client(timeout=10) as c:
            for _ in range(3):
                agent.infer(c, rng.normal(size=(BATCH, 4)).astype(np.float32))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not set(order[:3]).isdisjoint(_device_ids(agent)):
            time.sleep(0.05)
        held["ids"] = _device_ids(agent)

    store.before_put = before_put
    out = tmp_path / "out"
    try:
        rc = edgeship(["fleet", "capture", "pull", "--fleet", "f1", "--device", "cap1", "--out", str(out),
                       "--transport", "http", "--upload-url", f"{store.url}/captures/{{device}}/{{id}}.npz",
                       "--max-files", "6", "--timeout", "90", "--keys", str(operator_keys.dir),
                       "--broker", f"127.0.0.1:{broker.port}", "--json"])
    finally:
        store.stop()
    report = json.loads(capsys.readouterr().out)
    assert held["first_put"] == f"captures/cap1/{order[0]}.npz"
    new = held["ids"] - set(order)
    assert len(new) == 3 and held["ids"] == set(order[3:]) | new, "the ring evicted the three oldest"
    assert rc == 0 and report["errors"] == {}, report
    dev = report["devices"]["cap1"]
    assert dev["skipped"] == {order[1]: "evicted meanwhile", order[2]: "evicted meanwhile"}, dev
    assert dev["failed"] == {} and dev["bad_files"] == 0, dev
    kept = {order[0], *order[3:], *new}  # the one read before its eviction was uploaded whole
    assert dev["files"] == report["files"] == len(kept) == 7
    _check_set(out, kept)  # no index entry for a skipped capture, every file verified
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _device_ids(agent):
        time.sleep(0.1)
    assert not _device_ids(agent)
    _print(report)
    lines = capsys.readouterr().out.splitlines()
    end = lines[0].index("skipped") + len("skipped")  # a right-aligned column ends under its header's end
    row = next(ln for ln in lines if ln.startswith("cap1"))
    assert row[:end].split()[-1] == "2", lines
