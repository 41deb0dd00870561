"""Pure parts: the durable queue's ids, acks and budgets; payload stamping and parsing; topics."""

from __future__ import annotations

import json

import pytest

from device_agent.mqtt.config import MqttConfig
from device_agent.mqtt.errors import TelemetryConfigError
from device_agent.mqtt.queue import Budgets, DurableQueue, MessageClass
from runtime.contracts.errors import PayloadRejected
from runtime.contracts.mqtt import payloads
from runtime.contracts.mqtt.messages import MESSAGES, Kind, Sender
from runtime.contracts.mqtt.topics import (
    device_topics, rollout_topic, rollouts_filter, split_device_topic, split_rollout_topic,
)

BIG = Budgets(events_bytes=1 << 20, deploy_bytes=1 << 20, metrics_bytes=1 << 20, total_bytes=1 << 22)


def _put(q, cls, body="{\"a\":1}"):
    mid = q.next_msg_id()
    q.put(cls=cls, topic="t", body=body, boot_id="b", mono_ms=0, msg_id=mid)
    return mid


def test_ids_monotonic_across_reopen_and_rows_survive(tmp_path):
    q = DurableQueue(tmp_path / "q.sqlite", budgets=BIG)
    ids = [_put(q, MessageClass.EVENTS) for _ in range(5)]
    q.ack(ids[:2])
    q.close()
    q2 = DurableQueue(tmp_path / "q.sqlite", budgets=BIG)
    assert [m.msg_id for m in q2.peek(after_id=0, limit=10)] == ids[2:]
    assert q2.next_msg_id() > max(ids)
    assert q2.stats().depth == 3


def test_class_budget_drops_oldest_and_counts(tmp_path):
    body = json.dumps({"x": "y" * 80})
    b = Budgets(events_bytes=10_000, deploy_bytes=10_000, metrics_bytes=500, total_bytes=100_000)
    q = DurableQueue(tmp_path / "q.sqlite", budgets=b)
    ids = [_put(q, MessageClass.METRICS, body) for _ in range(20)]
    kept = [m.msg_id for m in q.peek(after_id=0, limit=100)]
    assert kept == ids[-len(kept):] and len(kept) < 20       # newest kept, oldest dropped
    assert q.stats().dropped["metrics"] == 20 - len(kept)
    assert q.stats().bytes <= 500


def test_total_budget_keeps_events_before_metrics(tmp_path):
    body = json.dumps({"x": "y" * 80})
    b = Budgets(events_bytes=10_000, deploy_bytes=10_000, metrics_bytes=10_000, total_bytes=2_000)
    q = DurableQueue(tmp_path / "q.sqlite", budgets=b)
    ev = [_put(q, MessageClass.EVENTS, body) for _ in range(5)]
    for _ in range(30):
        _put(q, MessageClass.METRICS, body)
    left = q.peek(after_id=0, limit=1000)
    assert [m.msg_id for m in left if m.cls is MessageClass.EVENTS] == ev
    assert q.stats().dropped["events"] == 0 and q.stats().dropped["metrics"] > 0
    q.close()
    assert DurableQueue(tmp_path / "q.sqlite", budgets=b).stats().dropped["metrics"] > 0  # persisted


def test_stamp_appends_seq_and_hist():
    origin = payloads.Origin("f", "d", "boot", 7, 1000, 5)
    doc = payloads.envelope(payloads.Kind.EVENT, origin, {"k": 1})
    out = json.loads(payloads.stamp(payloads.encode(doc), seq=3, hist=True))
    assert out["seq"] == 3 and out["hist"] is True and out["msg_id"] == 7 and out["schema"] == "edgeship.event/1"
    with pytest.raises(ValueError):
        payloads.envelope(payloads.Kind.EVENT, origin, {"msg_id": 1})


@pytest.mark.parametrize("raw, code", [
    (b"x" * 20000, "payload.too_large"),
    (b"{not json", "payload.not_json"),
    (b"\xff\xfe", "payload.not_json"),
    (b"[" * 8000 + b"]" * 8000, "payload.not_json"),  # json raises RecursionError
    (b"[1,2]", "payload.schema"),
    (b'{"schema":"edgeship.desired/9","version":1,"deployment_id":"d","model":"m","release":1}', "payload.schema"),
    (b'{"schema":"edgeship.desired/1","version":"1","deployment_id":"d","model":"m","release":1}', "payload.schema"),
    (b'{"schema":"edgeship.desired/1","version":1,"deployment_id":"../x","model":"m","release":1}', "payload.schema"),
    (b'{"schema":"edgeship.desired/1","version":true,"deployment_id":"d","model":"m","release":1}', "payload.schema"),
    (b'{"schema":"edgeship.desired/1","version":1,"deployment_id":"d","model":"m","release":0}', "payload.schema"),
])
def test_parse_desired_rejects(raw, code):
    with pytest.raises(PayloadRejected) as e:
        payloads.parse_desired(raw, max_bytes=16384)
    assert e.value.reason_code == code


def test_parse_desired_accepts_and_ignores_unknown_fields():
    d = payloads.parse_desired(json.dumps({**payloads.Desired(3, "dep-1", "m", 2).to_json(), "future": 1}).encode(),
                               max_bytes=16384)
    assert (d.version, d.deployment_id, d.model, d.release) == (3, "dep-1", "m", 2)


def test_topics_and_config_validation():
    t = device_topics(fleet="f", device="d")
    assert t.status == "edgeship/v1/f/d/status" and t.owns("edgeship/v1/f/d/cmd/x/resp/1")
    assert not t.owns("edgeship/v1/f/other/x") and not t.owns("edgeship/v1/f/d/#")
    assert split_device_topic("edgeship/v1/f/d/deploy/x") == ("f", "d", "deploy/x")
    for bad in ("a/b", "+", "#", "", "$SYS"):
        with pytest.raises(ValueError):
            device_topics(fleet="f", device=bad)
    with pytest.raises(TelemetryConfigError, match="unknown key"):
        MqttConfig.from_mapping({"fleet": "f", "prot": 1})
    with pytest.raises(TelemetryConfigError, match=r"\[mqtt\] port: expected an integer"):
        MqttConfig.from_mapping({"fleet": "f", "port": "1883"})
    cfg = MqttConfig.from_mapping({"fleet": "f", "device_id": "d", "groups": ["lab"]}, state_dir="/s")
    assert cfg.queue_dir == "/s/telemetry" and cfg.groups == ("lab",)


def test_rollout_topics_round_trip_and_malformed_ones_are_not_parsed():
    for leaf in ("claim", "control", "state"):
        t = rollout_topic(fleet="f1", rollout="ro-1", leaf=leaf)
        assert t == f"edgeship/v1/_rollouts/f1/ro-1/{leaf}"
        assert split_rollout_topic(t) == ("f1", "ro-1", leaf)
        assert split_device_topic(t) != ("f1", "ro-1", leaf)       # not a device's topic
    other = rollout_topic(fleet="f", rollout="r", leaf="state", prefix="acme/v2")
    assert other == "acme/v2/_rollouts/f/r/state"
    assert split_rollout_topic(other, prefix="acme/v2") == ("f", "r", "state")
    assert split_rollout_topic(other) is None                      # another prefix
    for bad in ("edgeship/v1/_rollouts/f/r", "edgeship/v1/_rollouts/f/r/state/x", "edgeship/v1/f/d/status",
                "edgeship/v1/_rollouts", "edgeship/v1/_rollout/f/r/state"):
        assert split_rollout_topic(bad) is None, bad
    with pytest.raises(ValueError, match="not one of claim, control, state"):
        rollout_topic(fleet="f", rollout="r", leaf="status")
    assert rollouts_filter() == "edgeship/v1/_rollouts/+/+/state"
    assert rollouts_filter(fleet="f1", prefix="p") == "p/_rollouts/f1/+/state"
    with pytest.raises(ValueError, match="fleet"):
        rollouts_filter(fleet="a/b")
    for fleet, rid, what in (("a/b", "r", "fleet"), ("f", "a/b", "rollout id"), ("f", "+", "rollout id")):
        with pytest.raises(ValueError, match=what):  # a level a parser would never read back
            rollout_topic(fleet=fleet, rollout=rid, leaf="state")


def test_metrics_payload_from_the_agents_request_window():
    import numpy as np

    from device_agent.agent.metrics import RequestWindow
    from device_agent.mqtt.system import read_temperature_c

    now = [0.0]
    w = RequestWindow(clock=lambda: now[0])
    values = [i / 1000 for i in range(1, 101)]                     # 1..100 ms, every 10th fails
    for i, v in enumerate(values):
        w.observe("sha", i % 10 != 0, v)
    now[0] = 10.0
    s = w.roll()
    body = payloads.metrics(window_s=s.window_s, requests=s.requests, errors=s.errors,
                            latency_ms={"p50": s.latency_ms_p50, "p95": s.latency_ms_p95, "p99": s.latency_ms_p99},
                            system={"cpu_percent": 1.0}, active_model=None, queue={"depth": 0})
    ok_ms = [v * 1000 for i, v in enumerate(values) if i % 10 != 0]  # percentiles of the successful ones
    assert (body["requests"], body["errors"], body["window_s"], body["throughput_rps"]) == (100, 10, 10.0, 10.0)
    assert body["latency_ms"] == {f"p{q}": round(float(np.percentile(ok_ms, q)), 3) for q in (50, 95, 99)}
    assert list(body) == ["window_s", "requests", "errors", "latency_ms", "throughput_rps", "cpu_percent",
                          "active_model", "queue"]                    # the wire order of docs/mqtt.md
    assert w.roll().requests == 0                                     # a new window starts empty
    t = read_temperature_c()
    assert t is None or -40 < t < 150


def _matches(filt: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest)."""
    f, t = filt.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)


def test_the_broker_acl_lets_a_device_write_exactly_what_the_catalogue_says_it_sends():
    """docs/mosquitto/acl against runtime.contracts.mqtt.messages: a new message kind whose
    sender or topic the ACL does not allow fails here, not on a production broker."""
    from pathlib import Path

    acl = (Path(__file__).resolve().parents[2] / "docs" / "mosquitto" / "acl").read_text().splitlines()
    pats = [ln.split() for ln in acl if ln.startswith("pattern ")]
    writes = [p[2].replace("%u", "f1/d1") for p in pats if p[1] == "write"]
    reads = [p[2].replace("%u", "f1/d1") for p in pats if p[1] == "read"]
    t = device_topics(fleet="f1", device="d1")
    assert set(MESSAGES) == set(Kind)
    for kind, spec in MESSAGES.items():
        topic = t.of(kind, **{k: "x1" for k in ("id", "name") if "{" + k + "}" in spec.leaf})
        may_write = any(_matches(w, topic) for w in writes)
        may_read = any(_matches(r, topic) for r in reads)
        if spec.sender is Sender.DEVICE:
            assert may_write and not may_read, (kind, topic)
        else:
            assert may_read and not may_write, (kind, topic)
    assert t.cmd_filter in reads and all(t.of(k).startswith(t.base + "/") for k in (Kind.STATUS, Kind.EVENT))
    with pytest.raises(ValueError, match="needs level"):
        t.of(Kind.DEPLOY)
    with pytest.raises(ValueError, match="deployment id"):
        t.deploy("+")
