"""edgeship device agent: serves the active model, takes signed updates, reports over MQTT.

Packages: ``agent`` (the in-process agent, its request window, batching, the agent process and
its control-API client), ``serving`` (HTTP), ``ota`` (signed updates), ``mqtt`` (telemetry and
control); modules ``store``, ``config``/``configfile``, ``install``, ``commands``, ``errors``
(the root of the one error tree). The formats shared with the host are in ``runtime.contracts``.

Never imports torch, onnx, openvino (except through runtime's lazy backend) or toolchain.
"""

__version__ = "0.1.0"
