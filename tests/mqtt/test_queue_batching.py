"""Batched durable queue: group commit, stage/flush, the sender's window, batched deletes.

Real SQLite files; a second connection looks at what is on disk (committed) independently
of the queue's own connection and memory.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time

import pytest

from device_agent.mqtt.errors import QueueError
from device_agent.mqtt.groupcommit import GroupCommit
from device_agent.mqtt.queue import Budgets, DurableQueue, MessageClass, QueuedMessage
from device_agent.mqtt.tail import CommittedTail

BIG = Budgets(events_bytes=1 << 24, deploy_bytes=1 << 24, metrics_bytes=1 << 24, total_bytes=1 << 26)


def row(cls=MessageClass.EVENTS, body='{"a":1}', boot_id="b", mono_ms=0):
    return lambda msg_id: QueuedMessage(msg_id, cls, "t", body, boot_id, mono_ms)


def on_disk(path) -> list[int]:
    """Committed ids, seen through a connection of its own."""
    db = sqlite3.connect(str(path))
    try:
        return [r[0] for r in db.execute("SELECT msg_id FROM outbox ORDER BY msg_id")]
    finally:
        db.close()


# ------------------------------------------------------------------ group commit (pure)
def test_group_commit_batches_the_callers_that_wait_behind_a_write():
    """While one write runs, every caller that arrives is staged; the next leader writes them
    all in one batch, and each caller returns only after the write that holds its item."""
    first_started, release = threading.Event(), threading.Event()
    written: list[list[int]] = []

    def write(items):
        if not written:
            first_started.set()
            assert release.wait(10)
        written.append(list(items))

    g = GroupCommit(write)
    returned: list[int] = []

    def call(i):
        with g.lock:
            g.commit([i])
        returned.append(i)

    t0 = threading.Thread(target=call, args=(0,))
    t0.start()
    assert first_started.wait(10)
    others = [threading.Thread(target=call, args=(i,)) for i in range(1, 9)]
    for t in others:
        t.start()
    deadline = time.monotonic() + 10
    while g.staged < 8 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert g.staged == 8 and returned == []          # staged, nobody told "written" yet
    release.set()
    for t in [t0] + others:
        t.join(10)
    assert written[0] == [0] and sorted(written[1]) == list(range(1, 9)) and len(written) == 2
    assert sorted(returned) == list(range(9)) and (g.batches, g.items) == (2, 9)


def test_group_commit_failure_reaches_every_caller_of_the_batch_and_is_counted():
    fail = [True]

    def write(items):
        if fail[0]:
            raise QueueError("disk full")

    g = GroupCommit(write, max_staged=100)
    with g.lock:
        g.stage([1, 2])
        with pytest.raises(QueueError, match="disk full"):
            g.commit([3])              # one batch [1, 2, 3]: all or nothing
        assert g.failed_items == 3 and g.batches == 0
        fail[0] = False
        g.stage([4])
        g.flush()
    assert (g.batches, g.items, g.failed_items) == (1, 1, 3)


def test_stage_writes_by_itself_at_max_staged():
    written: list[list[int]] = []
    g = GroupCommit(lambda items: written.append(list(items)), max_staged=4)
    with g.lock:
        for i in range(10):
            g.stage([i])
    assert written == [[0, 1, 2, 3], [4, 5, 6, 7]] and g.staged == 2


# ------------------------------------------------------------------ the queue on disk
def test_append_returns_after_commit_and_append_many_is_one_transaction(tmp_path):
    q = DurableQueue(tmp_path / "q.sqlite", budgets=BIG)
    m = q.append(row())
    assert on_disk(q.path) == [m.msg_id]
    before = q.stats().commits
    rows = q.append_many([row() for _ in range(50)])
    ids = [r.msg_id for r in rows]
    assert ids == list(range(ids[0], ids[0] + 50))                 # consecutive
    assert q.stats().commits == before + 1 and q.stats().rows_committed == 51
    assert on_disk(q.path) == [m.msg_id] + ids and q.depth() == 51


def test_staged_rows_are_not_on_disk_until_a_commit_covers_them(tmp_path):
    q = DurableQueue(tmp_path / "q.sqlite", budgets=BIG, max_staged=1000)
    staged = [q.stage(row()).msg_id for _ in range(20)]
    assert on_disk(q.path) == [] and q.stats().staged == 20 and q.depth() == 0
    durable = q.append(row()).msg_id                    # staging order is commit order
    assert on_disk(q.path) == staged + [durable] and q.stats().commits == 1
    more = [q.stage(row()).msg_id for _ in range(5)]
    q.flush()
    assert on_disk(q.path)[-5:] == more and q.stats().staged == 0


def test_stage_commits_itself_when_max_staged_wait(tmp_path):
    q = DurableQueue(tmp_path / "q.sqlite", budgets=BIG, max_staged=8)
    ids = [q.stage(row()).msg_id for _ in range(20)]
    assert on_disk(q.path) == ids[:16] and q.stats().staged == 4   # two batches of 8, bounded


def test_commit_failure_stores_nothing_of_the_batch_and_raises(tmp_path):
    q = DurableQueue(tmp_path / "q.sqlite", budgets=BIG)
    kept = q.append(row()).msg_id
    staged = q.stage(row()).msg_id
    with pytest.raises(QueueError, match="cannot store 2 message"):
        q.append(lambda mid: QueuedMessage(kept, MessageClass.EVENTS, "t", "{}", "b", 0))  # duplicate key
    assert on_disk(q.path) == [kept] and staged not in on_disk(q.path)
    assert q.stats().lost_unqueued == 2 and q.depth() == 1 and q.stats().bytes == len('{"a":1}') + 1
    assert q.append(row()).msg_id in on_disk(q.path)                  # the queue goes on


def test_budgets_are_enforced_per_batch_oldest_first(tmp_path):
    body = '{"x":"' + "y" * 90 + '"}'
    b = Budgets(events_bytes=10_000, deploy_bytes=10_000, metrics_bytes=1_000, total_bytes=100_000)
    q = DurableQueue(tmp_path / "q.sqlite", budgets=b)
    ev = q.append(row(MessageClass.EVENTS, body)).msg_id
    ids = [r.msg_id for r in q.append_many([row(MessageClass.METRICS, body) for _ in range(30)])]
    left = on_disk(q.path)
    kept = [i for i in left if i != ev]
    assert ev in left and kept == ids[-len(kept):] and 0 < len(kept) < 30   # newest metrics kept
    assert q.stats().dropped["metrics"] == 30 - len(kept) and q.stats().bytes <= 1_000 + len(body) + 1
    assert q.depth() == len(left)


def test_ack_deletes_a_batch_in_one_transaction(tmp_path):
    q = DurableQueue(tmp_path / "q.sqlite", budgets=BIG)
    ids = [r.msg_id for r in q.append_many([row() for _ in range(300)])]
    q.ack(ids[:250] + [10 ** 9])                           # an unknown id is ignored
    assert on_disk(q.path) == ids[250:] and q.stats().ack_commits == 1 and q.depth() == 50


def test_ack_rows_keeps_the_accounting_exact_when_the_budget_dropped_some(tmp_path):
    body = '{"x":"' + "y" * 90 + '"}'
    b = Budgets(events_bytes=10_000, deploy_bytes=10_000, metrics_bytes=700, total_bytes=100_000)
    q = DurableQueue(tmp_path / "q.sqlite", budgets=b)
    sent = q.append_many([row(MessageClass.METRICS, body) for _ in range(5)])     # handed to paho
    q.append_many([row(MessageClass.METRICS, body) for _ in range(5)])             # drops the oldest
    assert q.stats().dropped["metrics"] > 0
    q.ack_rows(sent)                                   # PUBACKs for rows partly dropped meanwhile
    db = sqlite3.connect(str(q.path))
    depth, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size),0) FROM outbox").fetchone()
    db.close()
    assert (q.depth(), q.stats().bytes) == (depth, size) and depth == len(on_disk(q.path))


def test_depth_and_oldest_age(tmp_path):
    q = DurableQueue(tmp_path / "q.sqlite", budgets=BIG, boot_id="this-boot")
    assert q.depth() == 0 and q.oldest_age_s() is None
    now_ms = int(time.monotonic() * 1000)
    q.append(row(boot_id="this-boot", mono_ms=now_ms - 5000))
    q.append(row(boot_id="this-boot", mono_ms=now_ms))
    assert q.depth() == 2 and 5.0 <= q.oldest_age_s() < 6.0
    other = DurableQueue(tmp_path / "q2.sqlite", budgets=BIG, boot_id="this-boot")
    ts_ms = int(time.time() * 1000) - 7000                # a row of an earlier boot: its wall clock
    other.append(lambda mid: QueuedMessage(mid, MessageClass.EVENTS, "t", f'{{"ts_ms":{ts_ms}}}', "old-boot", 1))
    assert 7.0 <= other.oldest_age_s() < 8.0



def test_figures_come_from_memory_follow_acks_drops_and_restarts_and_never_wait_for_a_commit(tmp_path):
    body = '{"x":"' + "y" * 90 + '"}'
    b = Budgets(events_bytes=10_000, deploy_bytes=10_000, metrics_bytes=700, total_bytes=100_000)
    q = DurableQueue(tmp_path / "q.sqlite", budgets=b, boot_id="this-boot")
    now_ms = int(time.monotonic() * 1000)

    def disk_age():  # what the oldest row on disk says, read behind the queue's back
        db = sqlite3.connect(str(q.path))
        got = db.execute("SELECT mono_ms FROM outbox ORDER BY msg_id LIMIT 1").fetchone()
        db.close()
        return None if got is None else time.monotonic() - got[0] / 1000.0

    first = q.append_many([row(MessageClass.METRICS, body, "this-boot", now_ms - 9000 + i * 1000) for i in range(5)])
    assert abs(q.oldest_age_s() - disk_age()) < 0.2 and 9.0 <= q.oldest_age_s() < 10.0
    q.ack_rows(first[:2])                                        # the oldest acknowledged
    assert abs(q.oldest_age_s() - disk_age()) < 0.2 and 7.0 <= q.oldest_age_s() < 8.0
    q.append_many([row(MessageClass.METRICS, body, "this-boot", now_ms - 500) for _ in range(5)])  # drops the oldest
    dropped = q.stats().dropped["metrics"]
    assert dropped > 0 and abs(q.oldest_age_s() - disk_age()) < 0.2
    held = threading.Event()
    got: list = []
    with q._db_lock:                                             # a commit in progress holds the lock:
        t = threading.Thread(target=lambda: got.append((q.stats(), q.oldest_age_s(), held.set())))
        t.start()                                                # the figures do not wait for it
        assert held.wait(5), "stats() waited for the database lock"
    t.join()
    assert got[0][0].dropped["metrics"] == dropped and got[0][0].depth == q.depth()
    q.close()
    again = DurableQueue(tmp_path / "q.sqlite", budgets=b, boot_id="this-boot")   # counters persist
    assert again.stats().dropped["metrics"] == dropped and abs(again.oldest_age_s() - disk_age()) < 0.2
    again.ack(on_disk(again.path))
    assert again.oldest_age_s() is None and again.depth() == 0

# ------------------------------------------------------------------ the sender's window
def test_window_serves_commits_from_memory(tmp_path):
    q = DurableQueue(tmp_path / "q.sqlite", budgets=BIG)
    assert q.next_batch(after_id=0, limit=10) == []       # caught up with the (empty) disk
    rows = q.append_many([row() for _ in range(5)])
    db = sqlite3.connect(str(q.path))                     # remove them behind the queue's back:
    db.execute("DELETE FROM outbox")                      # the window still has them, so it did
    db.commit()                                           # not read them back from disk
    db.close()
    assert q.next_batch(after_id=0, limit=10) == rows


def test_next_batch_equals_reading_the_disk_through_overflow_drops_and_give_backs(tmp_path):
    """Differential: a sender reading with next_batch (window, read-ahead, unread) gets exactly
    the rows, in order, that reading the disk with peek gives, while commits overflow the
    window, the budget drops rows and the reader gives rows back."""
    rng = random.Random(7)
    body = '{"x":"' + "y" * 40 + '"}'
    b = Budgets(events_bytes=1 << 20, deploy_bytes=1 << 20, metrics_bytes=3_000, total_bytes=1 << 22)
    q = DurableQueue(tmp_path / "q.sqlite", budgets=b, max_staged=7, tail_rows=16, tail_bytes=1 << 20)
    cursor, sent = 0, []
    for _ in range(400):
        op = rng.random()
        if op < 0.3:
            q.append_many([row(rng.choice(list(MessageClass)), body) for _ in range(rng.randint(1, 12))])
        elif op < 0.5:
            q.stage(row(MessageClass.METRICS, body))
        elif op < 0.55:
            q.flush()
        else:
            limit = rng.randint(1, 20)
            want = q.peek(after_id=cursor, limit=limit)
            got = q.next_batch(after_id=cursor, limit=limit)
            assert [m.msg_id for m in got] == [m.msg_id for m in want]
            keep = rng.randint(0, len(got))
            if got[keep:]:
                q.unread(got[keep:], after_id=got[keep - 1].msg_id if keep else cursor)
            if keep:
                cursor = got[keep - 1].msg_id
                sent += [m.msg_id for m in got[:keep]]
            if rng.random() < 0.3:
                q.ack(sent[: rng.randint(0, len(sent))])
    assert sent == sorted(set(sent))                      # in order, never twice


def test_window_unit_rules():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class R:
        msg_id: int
        size: int = 1

    t = CommittedTail(max_rows=3, max_bytes=100)
    assert t.take(after_id=0, limit=5) is None            # nothing known yet: read the disk
    t.load(after_id=0, rows=[R(1)], complete=True)
    t.extend([R(2), R(3)])
    assert [r.msg_id for r in t.take(after_id=0, limit=2)] == [1, 2]
    t.extend([R(4), R(5), R(6)])                          # does not fit: stops following
    assert [r.msg_id for r in t.take(after_id=2, limit=5)] == [3]
    assert t.take(after_id=3, limit=5) is None            # dry, rows 4.. are on disk only
    t.load(after_id=3, rows=[R(4), R(5)], complete=True)
    got = t.take(after_id=3, limit=5)
    t.unread(got[1:], after_id=4)
    assert [r.msg_id for r in t.take(after_id=4, limit=5)] == [5]
    assert t.take(after_id=1, limit=5) is None            # before its start (a rewind): disk


# ------------------------------------------------------------------ encode once, fast
@pytest.mark.parametrize("body", [{}, {"k": 1}, {"detail": "é ✓ \"q\"", "context": {"a": [1, 2.5, None, True]}},
                                  {"requests": 10, "latency_ms": {"p50": 0.41}, "active_model": None}])
def test_envelope_encoder_gives_the_text_of_envelope_then_encode(body):
    from runtime.contracts.mqtt import payloads
    from runtime.contracts.mqtt.messages import Kind

    enc = payloads.EnvelopeEncoder(fleet="plant-a", device="cam-1", boot_id="403c8ea1")
    for kind in (Kind.EVENT, Kind.METRICS, Kind.DEPLOY):
        origin = payloads.Origin("plant-a", "cam-1", "403c8ea1", 1532, 1795712700065, 518759)
        want = payloads.encode(payloads.envelope(kind, origin, body))
        assert enc.encode(kind, msg_id=1532, ts_ms=1795712700065, mono_ms=518759, body=body) == want
    with pytest.raises(ValueError, match="msg_id"):
        enc.encode(Kind.EVENT, msg_id=1, ts_ms=1, mono_ms=1, body={"msg_id": 2})


# ------------------------------------------------------------------ the link: acks and write-ahead
def _link(tmp_path, port=1):
    from device_agent.mqtt.config import MqttConfig
    from device_agent.mqtt.link import MqttLink

    q = DurableQueue(tmp_path / "q.sqlite", budgets=BIG)
    config = MqttConfig(fleet="f1", device_id="d1", port=port, queue_dir=str(tmp_path))
    return MqttLink(config=config, queue=q, on_connected=lambda conn: None, on_message=lambda m: None,
                    will_body=lambda conn: {"online": False})


class _RC:
    def __init__(self, failure: bool) -> None:
        self.is_failure = failure


def test_pubacks_are_deleted_in_one_transaction_when_due(tmp_path):
    """paho's on_publish for each packet id -> the row of that id is deleted, in batches; a
    broker refusal is counted (and deleted); PUBACKs of direct publishes are ignored."""
    from device_agent.mqtt import link as link_mod

    link = _link(tmp_path)
    rows = link.queue.append_many([row() for _ in range(10)])
    link._inflight.update({100 + i: r for i, r in enumerate(rows)})             # as the sender records them
    for i in range(10):
        link._handle_publish(None, None, 100 + i, _RC(i == 3), None)
    link._handle_publish(None, None, 7, _RC(False), None)                       # a status message
    link._settle()
    assert link.queue.depth() == 10 and link.queue.stats().ack_commits == 0     # not due yet: batched
    link._delete_due = 0.0                                                      # _ACK_DELAY_S passed
    link._settle()
    assert link.queue.depth() == 0 and link.queue.stats().ack_commits == 1 and link.counters.acked == 10
    assert link.counters.broker_rejected == 1 and link._inflight == {}
    more = link.queue.append_many([row() for _ in range(link_mod._ACK_BATCH)])
    link._inflight.update({1000 + i: r for i, r in enumerate(more)})
    for i in range(len(more)):
        link._handle_publish(None, None, 1000 + i, _RC(False), None)
    link._settle()                                                              # a full batch is due at once
    assert link.queue.depth() == 0 and link.queue.stats().ack_commits == 2


@pytest.mark.mqtt
def test_the_sender_publishes_only_committed_rows_and_every_one_arrives(broker, make_device):
    import json

    from mqtt_sim import SimAgent
    from mqtt_helpers import wait_for
    from runtime.contracts.mqtt.messages import Kind
    from toolchain.fleet.localbroker import Recorder

    rec = Recorder(broker.port, "edgeship/v1/f1/d1/events")
    svc = make_device(SimAgent())
    link, topic = svc.link, svc.topics.events
    db = sqlite3.connect(str(svc.queue.path), check_same_thread=False)   # sees committed rows only
    publish, uncommitted = link._client.publish, []

    def spy(t, payload=None, qos=0, retain=False, properties=None):
        if t == topic:
            mid = json.loads(payload)["msg_id"]
            if db.execute("SELECT 1 FROM outbox WHERE msg_id=?", (mid,)).fetchone() is None:
                uncommitted.append(mid)
        return publish(t, payload, qos=qos, retain=retain, properties=properties)

    link._client.publish = spy
    ids = [link.stage(MessageClass.EVENTS, topic, Kind.EVENT, {"i": i}) for i in range(300)]
    ids += link.enqueue_many([(MessageClass.EVENTS, topic, Kind.EVENT, {"i": i}) for i in range(100)])
    ids += [link.enqueue(MessageClass.EVENTS, topic, Kind.EVENT, {"i": i}) for i in range(100)]
    wait_for(lambda: set(ids) <= rec.ids() and svc.queue.depth() == 0, timeout_s=60)
    assert uncommitted == []
    docs = sorted((d for d in rec.by_id.values() if d["msg_id"] in set(ids)), key=lambda d: d["msg_id"])
    assert [d["msg_id"] for d in docs] == sorted(ids) and not any(d["hist"] for d in docs)
    assert svc.queue.stats().ack_commits < len(ids) / 4          # deleted in batches, not one by one
    db.close()
    rec.close()
