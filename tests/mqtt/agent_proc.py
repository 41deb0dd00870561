"""A real agent process with MQTT telemetry, for the kill -9 / Last Will test.

usage: agent_proc.py STATE_DIR BROKER_PORT FLEET DEVICE
Serves the active model of STATE_DIR (device_agent.agent.Agent), runs inference in a loop,
and prints READY once connected to the broker.
"""

import sys
import time

import numpy as np

from device_agent.agent import Agent
from device_agent.config import AgentConfig
from device_agent.telemetry import MqttConfig, start

state_dir, port, fleet, device = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
agent = Agent(AgentConfig.for_state_dir(state_dir))
svc = start(MqttConfig(fleet=fleet, device_id=device, port=port, queue_dir=f"{state_dir}/telemetry",
                       metrics_interval_s=0.5), agent, None)
if not svc.link.wait_connected(20):
    sys.exit("no broker")
print("READY", flush=True)
x = np.ones((1, 4), dtype=np.float32)
while True:
    agent.infer({"x": x})
    time.sleep(0.01)
