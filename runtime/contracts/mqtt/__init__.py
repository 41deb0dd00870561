"""The MQTT contract between the operator (``toolchain.fleet``) and the agent (``device_agent.mqtt``).

- :mod:`.messages` — the catalogue: every message kind, its topic leaf, sender, retain flag.
- :mod:`.topics` — topic names under ``edgeship/v1/<fleet>/<device>/`` and a rollout
  controller's under ``edgeship/v1/_rollouts/<fleet>/<id>/`` (pure functions).
- :mod:`.payloads` — the versioned JSON payloads: envelope, builders, strict inbound parsers.
- :mod:`.signing` — the operator's signature on every message it sends (Ed25519), the
  device's checks (key, signature, addressee, expiry, replay) and its replay state.

docs/mqtt.md describes the wire format; docs/mosquitto/acl confines each device to the
topics this catalogue says it sends.
"""
