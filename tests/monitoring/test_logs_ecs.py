"""The agent's logs are ECS JSON lines, one object per line, nothing else on stdout/stderr:
checked on every line a real agent writes during the OTA demo, on an error's traceback, on a
crashed thread, and on a native library's write to fd 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monhelpers import env

from toolchain.fleet.localbroker import MOSQUITTO

REQUIRED = ("@timestamp", "log.level", "message", "ecs.version", "event.action", "event.outcome",
            "service.name", "log.logger")


def _get(obj: dict, dotted: str):
    """An ECS field by its dotted name, flat (``log.level``) or nested (``event.action``)."""
    if dotted in obj:
        return obj[dotted]
    cur = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


def check_line(line: str) -> dict:
    obj = json.loads(line)
    assert isinstance(obj, dict), line
    for f in REQUIRED:
        assert _get(obj, f) not in (None, ""), (f, line)
    assert _get(obj, "service.name") == "edgeship-agent"
    assert _get(obj, "event.outcome") in ("success", "failure", "unknown")
    assert _get(obj, "log.level") in ("debug", "info", "warning", "error", "critical")
    assert set(obj) <= {"@timestamp", "log.level", "message", "ecs.version", "event", "service", "log", "process",
                        "edgeship", "error"}, line  # edgeship's own fields stay in their namespace
    return obj


@pytest.mark.mqtt
def test_every_line_the_agent_writes_during_the_ota_demo_is_ecs_json(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not found")
    from toolchain.demo_ota import story

    assert story(tmp_path) == 0
    lines = (tmp_path / "agent.log").read_text().splitlines()  # the agent's stdout and stderr together
    objs = [check_line(ln) for ln in lines]
    actions = {_get(o, "event.action") for o in objs}
    assert {"model.loaded", "agent.started", "model.switched", "agent.stopped"} <= actions
    refused = [o for o in objs if _get(o, "event.action") == "update.error"]  # the bad release 3 at the gate
    assert refused and all(_get(o, "event.outcome") == "failure" for o in refused)
    assert refused[0]["edgeship"]["reason"] == "gate.tolerance"


def test_errors_carry_their_traceback_and_native_or_thread_noise_is_routed(tmp_path):
    script = tmp_path / "noise.py"
    script.write_text(
        "import os, sys, threading, warnings\n"
        "from device_agent.logs import configure, get_logger\n"
        "from runtime.nativelog import native_stderr_to_log\n"
        "configure(level='info')\n"
        "log = get_logger('agent')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    log.error('demo.failed', exc_info=True, model='m')\n"
        "with native_stderr_to_log('edgeship.engine.tflite'):\n"
        "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
        "t = threading.Thread(target=lambda: {}['missing'], name='worker'); t.start(); t.join()\n"
        "warnings.warn('a library warning')\n")
    p = subprocess.run([sys.executable, str(script)], env=env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == "", p.stdout
    objs = [check_line(ln) for ln in p.stderr.splitlines()]
    by = {_get(o, "event.action"): o for o in objs}
    err = by["demo.failed"]
    assert err["error"]["type"] == "ZeroDivisionError" and "Traceback" in err["error"]["stack_trace"]
    assert _get(err, "event.outcome") == "failure" and err["edgeship"]["model"] == "m"
    native = by["edgeship.engine.tflite"]
    assert native["message"] == "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
    crash = by["thread.crashed"]
    assert crash["error"]["type"] == "KeyError" and crash["edgeship"]["thread"] == "worker"
    assert "a library warning" in by["py.warnings"]["message"]
    assert len(objs) == 4
