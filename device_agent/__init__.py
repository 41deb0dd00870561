"""edgeship device agent: serves the active model, takes signed updates, reports over MQTT.

Never imports torch, onnx, openvino (except through runtime's lazy backend) or toolchain.
"""

__version__ = "0.1.0"
