"""The control plane does not trust the broker: attacks by any client on the same broker.

Each attack test asserts the typed refusal (the reason code on ``events`` and in the
command answer) AND that the device is unchanged: the model it serves, its applied desired
version, its persisted replay state, and no update started. The pure checks of
``runtime.contracts.mqtt.signing`` are tested without a broker first.
"""

from __future__ import annotations

import json
import time

import pytest

from mqtt_helpers import wait_for
from mqtt_sim import SimAgent, SimUpdater
from runtime.contracts.mqtt.messages import MESSAGES, Kind, Sender, operator_specs
from runtime.contracts.mqtt.payloads import Desired
from runtime.contracts.mqtt.signing import (
    Addressee, BadControlSignatureError, ExpiredMessageError, MisaddressedMessageError, OperatorKeys,
    Recipient, ReplayState, ReplayedMessageError, Signed, UnknownOperatorKeyError, UnsignedMessageError,
    sign, verify,
)
from runtime.contracts.mqtt.topics import device_topics

T = device_topics(fleet="f1", device="d1")
ME = Recipient("f1", "d1", ("canary",))


def _key():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def _signed(*, leaf="desired", schema=Kind.DESIRED.schema, to=Addressee("f1", device="d1"), version=5,
            issued=1_000, expires=10**13, body=None):
    return Signed(schema=schema, leaf=leaf, to=to, version=version, issued_at_ms=issued, expires_at_ms=expires,
                  body=body or Desired(1, "dep", "m", 2).to_json())


def _verify(raw: bytes, keys, *, leaf="desired", schema=Kind.DESIRED.schema, now_ms=2_000, replay=ReplayState()):
    return verify(json.loads(raw), keys=keys, leaf=leaf, schema=schema, me=ME, now_ms=now_ms, replay=replay)


# ------------------------------------------------------------------ pure checks
def test_verify_accepts_the_operators_message_and_names_each_attack():
    from runtime.contracts.mqtt.signing import public_raw

    k, other = _key(), _key()
    keys = OperatorKeys.from_root({"signed": {"x-edgeship-operator": OperatorKeys.root_field([public_raw(k)])}})
    ok = _verify(sign(_signed(), private_key=k), keys)
    assert ok.fresh and ok.body["release"] == 2 and ok.signed.version == 5
    group = _verify(sign(_signed(to=Addressee("f1", group="canary")), private_key=k), keys)
    assert group.fresh
    with pytest.raises(UnsignedMessageError):
        _verify(json.dumps(Desired(1, "dep", "m", 2).to_json()).encode(), keys)
    with pytest.raises(UnknownOperatorKeyError):
        _verify(sign(_signed(), private_key=other), keys)
    doc = json.loads(sign(_signed(), private_key=k))
    doc["signed"]["body"]["release"] = 1                           # changed after signing
    with pytest.raises(BadControlSignatureError):
        _verify(json.dumps(doc).encode(), keys)
    doc = json.loads(sign(_signed(), private_key=k))
    doc["keyid"] = next(iter(keys.keys))
    doc["sig"] = json.loads(sign(_signed(version=6), private_key=k))["sig"]   # another message's signature
    with pytest.raises(BadControlSignatureError):
        _verify(json.dumps(doc).encode(), keys)
    for to in (Addressee("f1", device="d2"), Addressee("f2", device="d1"), Addressee("f1", group="other")):
        with pytest.raises(MisaddressedMessageError):
            _verify(sign(_signed(to=to), private_key=k), keys)
    with pytest.raises(MisaddressedMessageError):                 # a rebirth moved to the rollback topic
        _verify(sign(_signed(leaf="cmd/rebirth", schema=Kind.CMD.schema, body={}), private_key=k), keys,
                leaf="cmd/rollback", schema=Kind.CMD.schema)
    with pytest.raises(ExpiredMessageError):
        _verify(sign(_signed(expires=1_500), private_key=k), keys)
    # a clock set back does not revive an expired message: the newest issued_at accepted counts
    with pytest.raises(ExpiredMessageError):
        _verify(sign(_signed(expires=1_500), private_key=k), keys, now_ms=0,
                replay=ReplayState(latest_issued_ms=1_600))
    state = ReplayState().accept(ok)
    assert not _verify(sign(_signed(), private_key=k), keys, replay=state).fresh   # the same message again
    with pytest.raises(ReplayedMessageError):                     # same version, other content
        _verify(sign(_signed(body=Desired(1, "dep", "m", 3).to_json()), private_key=k), keys, replay=state)
    with pytest.raises(ReplayedMessageError):
        _verify(sign(_signed(version=4), private_key=k), keys, replay=state)
    assert _verify(sign(_signed(version=6), private_key=k), keys, replay=state).fresh
    assert ReplayState.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_every_operator_row_of_the_catalogue_is_signed_and_subscribed():
    """A new operator message kind (a catalogue row) is covered without further code."""
    from runtime.contracts.mqtt.messages import match_leaf, operator_filters

    assert {m.kind for m in operator_specs()} >= {Kind.DESIRED, Kind.CMD}
    for spec in operator_specs():
        leaf = spec.leaf.format(**{k: "x1" for k in ("id", "name") if "{" + k + "}" in spec.leaf})
        assert match_leaf(leaf, sender=Sender.OPERATOR)[0] == spec
        assert any(_matches(f, leaf) for f in operator_filters())
    assert match_leaf("status", sender=Sender.OPERATOR) is None and MESSAGES[Kind.STATUS].sender is Sender.DEVICE


def _matches(filt: str, topic: str) -> bool:
    f, t = filt.split("/"), topic.split("/")
    return len(f) == len(t) and all(a in ("+", b) for a, b in zip(f, t))


# ------------------------------------------------------------------ against a real broker
pytestmark = pytest.mark.mqtt


def _device_state(svc, agent, up):
    replay = svc.gate.replay_store.path
    return {"active": dict(agent.active), "previous": agent.previous and dict(agent.previous),
            "applied": svc.state.applied_version, "calls": list(up.calls),
            "replay": replay.read_text() if replay.exists() else None}


def _events(operator, n, timeout_s=10.0):
    got = []
    for m in operator.messages(timeout_s=timeout_s):
        if m.topic == T.events:
            got.append(m.json())
            if len(got) >= n:
                return got
    raise AssertionError(f"{len(got)} of {n} events: {got}")


@pytest.fixture
def device(make_device, operator):
    agent = SimAgent()
    agent.switch("demo", 3)                                         # running release 3, previous 2
    agent.previous["release"] = 2
    up = SimUpdater(agent)
    svc = make_device(agent, up, groups=("canary",))
    operator.subscribe(T.events, f"{T.base}/cmd/+/resp/#")
    operator.publish_desired("f1", "d1", Desired(1, "dep-ok", "demo", 3))   # accepted: already active
    wait_for(lambda: svc.state.applied_version == 1)
    return svc, agent, up


def test_anonymous_rollback_and_forged_desired_are_refused_and_nothing_changes(device, operator, tmp_path):
    svc, agent, up = device
    before = _device_state(svc, agent, up)
    # the attack of the issue: an anonymous client rolls the device back and starts a deployment
    operator.publish(T.cmd("rollback"), b"{}", retain=False)
    operator.publish(T.desired, json.dumps(Desired(9, "dep-evil", "demo", 2).to_json()).encode(), retain=True)
    # a forger with its own key, and a signature lifted onto another body
    from toolchain.fleet.signer import OperatorSigner

    forger = OperatorSigner(_key())
    operator.publish(T.desired, forger.desired(Desired(10, "dep-forged", "demo", 2), to=Addressee("f1", device="d1")),
                     retain=True)
    good = json.loads(operator.signer.desired(Desired(11, "dep-x", "demo", 3), to=Addressee("f1", device="d1")))
    good["signed"]["body"]["release"] = 2
    operator.publish(T.desired, json.dumps(good).encode(), retain=True)
    codes = [e["reason_code"] for e in _events(operator, 4)]
    assert codes == ["control.unsigned", "control.unsigned", "control.unknown_key", "control.bad_signature"]
    assert _device_state(svc, agent, up) == before
    assert agent.infer({"x": [1, 2]}) == {"y": 3}                   # serving unaffected


def test_replayed_expired_and_misaddressed_commands_are_refused(device, operator):
    svc, agent, up = device
    captured = operator.signer.command("rollback", {}, to=Addressee("f1", device="d1"))
    r = operator.command("f1", "d1", "rebirth")
    assert r["ok"] is True                                          # a newer signed command was accepted
    before = _device_state(svc, agent, up)
    cases = [
        (captured, "control.replayed"),                             # captured earlier, played back later
        (operator.signer.command("rollback", {}, to=Addressee("f1", device="d1"), expires_s=-1), "control.expired"),
        (operator.signer.command("rollback", {}, to=Addressee("f1", device="d2")), "control.misaddressed"),
        (operator.signer.command("rebirth", {}, to=Addressee("f1", device="d1")), "control.misaddressed"),
        (operator.signer.command("rollback", {}, to=Addressee("f1", group="field")), "control.misaddressed"),
    ]
    for raw, code in cases:                                          # all sent on cmd/rollback
        assert operator.command("f1", "d1", "rollback", raw)["reason_code"] == code
    codes = [e["reason_code"] for e in _events(operator, len(cases))]
    assert sorted(codes) == sorted(c for _, c in cases)              # events come through the queue: any order
    assert _device_state(svc, agent, up) == before and agent.active["release"] == 3
    r = operator.command("f1", "d1", "rollback")                    # the operator's own, fresh: obeyed
    assert r["ok"] is True and agent.active["release"] == 2


def test_replay_state_survives_a_restart(device, operator, make_device):
    svc, agent, up = device
    old = operator.signer.desired(Desired(2, "dep-2", "demo", 3), to=Addressee("f1", device="d1"))
    operator.publish(T.desired, old, retain=True)
    wait_for(lambda: svc.state.applied_version == 2)
    operator.publish_desired("f1", "d1", Desired(3, "dep-3", "demo", 3))
    wait_for(lambda: svc.state.applied_version == 3)
    svc.stop(timeout_s=1)
    svc2 = make_device(agent, up, queue_dir=svc.config.queue_dir, groups=("canary",))
    operator.publish(T.desired, old, retain=True)                  # the captured v2 document again
    assert [e["reason_code"] for e in _events(operator, 1)] == ["control.replayed"]
    assert svc2.state.applied_version == 3


def test_a_flood_of_forgeries_is_reported_rate_limited_and_serving_goes_on(device, operator):
    svc, agent, up = device
    before = _device_state(svc, agent, up)
    t0 = time.monotonic()
    for i in range(60):
        operator.publish(T.cmd("rollback"), json.dumps({"i": i}).encode(), retain=False)
    events = []
    for m in operator.messages(timeout_s=3.0, idle_s=1.0):
        if m.topic == T.events:
            events.append(m.json())
    assert 5 <= len(events) <= 12, len(events)                      # the burst, not 60
    assert all(e["reason_code"] == "control.unsigned" for e in events)
    assert time.monotonic() - t0 < 10 and agent.infer({"x": [2]}) == {"y": 2}
    assert _device_state(svc, agent, up) == before
    svc.refusals.tokens = 1.0                                       # time passes: the next one says what it held back
    operator.publish(T.cmd("rollback"), b"{}", retain=False)
    assert _events(operator, 1)[0]["context"]["suppressed"] >= 48


def test_every_operator_kind_refuses_unsigned_messages(device, operator):
    svc, agent, up = device
    before = _device_state(svc, agent, up)
    leaves = [s.leaf.format(**{k: "rollback" for k in ("id", "name") if "{" + k + "}" in s.leaf})
              for s in operator_specs()]
    for leaf in leaves:
        operator.publish(f"{T.base}/{leaf}", b'{"schema": "edgeship.desired/1", "version": 99}', retain=False)
    assert [e["reason_code"] for e in _events(operator, len(leaves))] == ["control.unsigned"] * len(leaves)
    assert _device_state(svc, agent, up) == before
