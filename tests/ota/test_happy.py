"""A signed update end to end: publish release 2, the device fetches, gates, switches, trials, commits."""

from __future__ import annotations

import numpy as np

from device_agent.update import Reason, State

from .conftest import GOLDEN_X


def test_update_commits_and_serves_new_release(env):
    b2 = env.bundle(release=2, kind="good2")
    pub = env.publish(b2)
    store, agent, up = env.device()
    events = []
    res = up.update("m", on_event=events.append)
    assert res.state is State.COMMIT, res
    assert res.reason is Reason.OK
    assert store.active().sha256 == pub.sha256 and store.active().release == 2
    assert store.previous().release == 1
    assert agent.current().ref.sha256 == pub.sha256
    np.testing.assert_allclose(agent.infer({"x": GOLDEN_X[0]})["y"], GOLDEN_X[0] * 2 + 1)
    assert [e.state for e in events] == ["fetch", "verify", "stage", "gate", "switch", "trial", "commit"]
    # nothing newer: the next update is a no-op that changes nothing
    res2 = up.update("m")
    assert res2.state is State.ABORTED and res2.reason is Reason.UP_TO_DATE
    agent.close()
