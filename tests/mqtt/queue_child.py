"""A process that writes the durable queue and reports every acknowledgement it got, for the
kill -9 tests (test_queue_kill9.py). Each report is one line written with a single
``os.write`` to stdout *after* the call returned, so what the parent reads is a subset of
what the process was told:

  q <id>   enqueue()/append() returned: the message is queued
  s <id>   stage() returned: accepted, not yet queued
  f <id>   flush() returned: every message this thread staged up to <id> is queued
  arm      the next commit kills the process (EDGESHIP_TEST_KILL_AT)

usage: python queue_child.py QUEUE_FILE MODE [PORT]
  MODE before_commit | after_commit: acknowledged writes, then a batch killed at that point
  MODE random: MqttLink (broker unreachable at PORT) with enqueuing and staging threads
               until the parent kills the process
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from device_agent.mqtt.queue import (  # noqa: E402
    KILL_AFTER_COMMIT, KILL_BEFORE_COMMIT, Budgets, DurableQueue, MessageClass, QueuedMessage,
)
from device_agent.store import KILL_ENV  # noqa: E402

BIG = Budgets(events_bytes=1 << 26, deploy_bytes=1 << 26, metrics_bytes=1 << 26, total_bytes=1 << 28)


def say(tag: str, value: object = "") -> None:
    os.write(1, f"{tag} {value}\n".encode())


def row(msg_id: int) -> QueuedMessage:
    return QueuedMessage(msg_id, MessageClass.EVENTS, "t", f'{{"msg_id":{msg_id}}}', "boot", 0)


def checkpoint_mode(path: str, point: str) -> None:
    q = DurableQueue(path, budgets=BIG, max_staged=1000)

    def appender() -> None:
        for _ in range(50):
            say("q", q.append(row).msg_id)

    threads = [threading.Thread(target=appender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for m in q.append_many([row] * 20):
        say("q", m.msg_id)
    last = 0
    for _ in range(30):
        last = q.stage(row).msg_id
        say("s", last)
    q.flush()
    say("f", last)
    for _ in range(10):          # accepted only: they ride in the next commit, the killed one
        say("s", q.stage(row).msg_id)
    os.environ[KILL_ENV] = point
    say("arm")
    q.append_many([row] * 25)    # dies in here
    say("survived")


def random_mode(path: str, port: int) -> None:
    from device_agent.mqtt.config import MqttConfig
    from device_agent.mqtt.link import MqttLink
    from runtime.contracts.mqtt.messages import Kind

    q = DurableQueue(path, budgets=BIG, max_staged=64)
    config = MqttConfig(fleet="f", device_id="d", port=port, queue_dir=str(Path(path).parent),
                        reconnect_min_s=1, reconnect_max_s=1)
    link = MqttLink(config=config, queue=q, on_connected=lambda conn: None, on_message=lambda m: None,
                    will_body=lambda conn: {"online": False})
    link.start()  # the sender commits staged messages in the background; the broker is away
    topic = link.topics.events

    def enqueuer(k: int) -> None:
        i = 0
        while True:
            say("q", link.enqueue(MessageClass.EVENTS, topic, Kind.EVENT, {"k": k, "i": i}))
            i += 1

    def stager() -> None:
        i = 0
        while True:
            last = 0
            for _ in range(20):
                last = link.stage(MessageClass.METRICS, topic, Kind.EVENT, {"i": i})
                say("s", last)
                i += 1
            link.flush()
            say("f", last)

    threads = [threading.Thread(target=enqueuer, args=(k,), daemon=True) for k in range(3)]
    threads.append(threading.Thread(target=stager, daemon=True))
    for t in threads:
        t.start()
    threading.Event().wait()


if __name__ == "__main__":
    file, mode = sys.argv[1], sys.argv[2]
    if mode == "random":
        random_mode(file, int(sys.argv[3]))
    else:
        checkpoint_mode(file, {"before_commit": KILL_BEFORE_COMMIT, "after_commit": KILL_AFTER_COMMIT}[mode])
