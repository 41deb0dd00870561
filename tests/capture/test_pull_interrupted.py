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
