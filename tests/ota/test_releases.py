"""The release-counter rule and the penalty box (device_agent/ota/releases.py, docs/ota.md):
pure decisions first, then through the real Updater against a real TUF repository."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from device_agent.ota import State
from device_agent.ota.errors import NoSuchTargetError, PenaltyBoxError, ReleaseRollbackError
from device_agent.ota.releases import Authority, ModelMemory, Penalty, ReleaseMemory, boxes, choose


@dataclass(frozen=True)
class C:
    release: int
    sha256: str


CANDS = [C(4, "s4"), C(3, "s3"), C(2, "s2"), C(1, "s1")]


def _choose(requested, mm=ModelMemory(), refs=((3, "s3"), (2, "s2")), authority=Authority.LOCAL):
    return choose(CANDS, model="m", requested=requested, mm=mm, store_refs=list(refs), authority=authority)


def test_choose_goes_forward_and_back_only_when_signed_and_ran_before():
    assert _choose(None).release == 4 and _choose(4).release == 4
    assert _choose(None, refs=((4, "s4"),)) is None                          # up to date
    with pytest.raises(ReleaseRollbackError, match="only an operator-signed"):
        _choose(2)                                                          # unsigned: never back
    assert _choose(2, authority=Authority.OPERATOR).release == 2            # signed, ran it: allowed
    assert _choose(3, authority=Authority.OPERATOR).release == 3            # the issue: back to 3 after a rollback
    ran = ModelMemory(ran={1: "s1"})
    assert _choose(1, mm=ran, authority=Authority.OPERATOR).release == 1
    with pytest.raises(ReleaseRollbackError, match="ran before"):
        _choose(1, authority=Authority.OPERATOR)                            # never ran release 1
    with pytest.raises(ReleaseRollbackError):
        _choose(1, mm=ModelMemory(ran={1: "other-bytes"}), authority=Authority.OPERATOR)
    with pytest.raises(ReleaseRollbackError):                               # the floor remembers release 5
        _choose(4, mm=ModelMemory(ran={5: "s5"}))
    with pytest.raises(NoSuchTargetError):
        _choose(9)


def test_penalty_box_blocks_every_path_until_forgiven():
    p = Penalty(sha256="s4", release=4, reason="gate.tolerance", detail="", failed_utc="t")
    mem = ReleaseMemory().box("m", p)
    for auth in Authority:
        with pytest.raises(PenaltyBoxError, match="retry --release 4"):
            _choose(4, mm=mem.of("m"), authority=auth)
        with pytest.raises(PenaltyBoxError):
            _choose(None, mm=mem.of("m"), authority=auth)
    mem2 = mem.skipped("m", "s4")
    assert mem2.of("m").boxed["s4"].skips == 1 and mem2.of("m").boxed["s4"].announced
    mem3, out = mem2.forgive("m", release=4)
    assert [x.sha256 for x in out] == ["s4"] and _choose(4, mm=mem3.of("m")).release == 4
    assert ReleaseMemory.from_json(mem2.to_json()) == mem2
    assert boxes("failed", "gate.nan") and boxes("rolled_back", "trial.latency") and boxes("failed", "state.crash_loop")
    assert not boxes("failed", "security.tampered_target") and not boxes("aborted", "aborted.cancelled")
    assert not boxes("commit", "ok") and not boxes("failed", "fetch.failed")


# ------------------------------------------------------------------ real updater, real repository
def test_forced_rollback_then_signed_return_to_release_3(env):
    """The issue: after a forced rollback from 3 to 2, release 3 could never be pushed again."""
    for r in (2, 3):
        env.publish(env.bundle(release=r, kind="good2" if r % 2 == 0 else "good"))
    store, agent, up = env.device()
    try:
        assert up.update("m", release=2).state is State.COMMIT
        assert up.update("m", release=3).state is State.COMMIT
        agent.rollback()                                             # cmd/rollback: 3 -> 2
        assert store.active().release == 2 and store.previous().release == 3
        res = up.update("m", release=3)                              # unsigned: refused
        assert res.state is State.FAILED and isinstance(up.last_error, ReleaseRollbackError)
        assert up.check("m") is None                                 # polling does not undo the rollback
        res = up.update("m", release=3, authority=Authority.OPERATOR)  # operator-signed: it ran 3 before
        assert res.state is State.COMMIT and store.active().release == 3
        res = up.update("m", release=1, authority=Authority.OPERATOR)  # fleet rollback to the installed release
        assert res.state is State.COMMIT and store.active().release == 1
        mem = up.releases.load().of("m")
        assert sorted(mem.ran) == [1, 2, 3]
    finally:
        agent.close()


def test_a_release_that_failed_its_gate_is_never_retried_until_forgiven(env):
    bad = env.publish(env.bundle(release=2, kind="nan"))
    store, agent, up = env.device()
    try:
        res = up.update("m")
        assert res.state is State.FAILED and res.reason.value == "gate.nan"
        boxed = up.releases.load().of("m").boxed
        assert list(boxed) == [bad.sha256] and boxed[bad.sha256].reason == "gate.nan"
        env.server.requests.clear()
        for auth in Authority:                                       # neither a local nor a signed request
            res = up.update("m", release=2, authority=auth)
            assert res.state is State.FAILED and isinstance(up.last_error, PenaltyBoxError)
        assert not [p for p, _ in env.server.requests if p.startswith("/targets/")]   # nothing downloaded
        cand, skipped = up.poll_check("m")
        assert cand is None and [p.release for p in skipped] == [2]
        assert store.active().release == 1
        assert [p.release for p in up.releases.forgive("m", 2)] == [2]
        assert up.update("m", release=2).reason.value == "gate.nan"  # retried once, boxed again
        good = env.publish(env.bundle(release=3, kind="good2"))      # a new release is not boxed
        assert up.check("m").sha256 == good.sha256
        assert up.update("m").state is State.COMMIT
    finally:
        agent.close()
