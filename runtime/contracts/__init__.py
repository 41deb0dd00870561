"""The formats that cross the host/device boundary, defined once; both sides import them.

- :mod:`.bundle` — the model bundle: ``model.json``, tar members, golden set, compatibility.
- :mod:`.release` — the release facts signed into TUF targets (what a device decides on
  before it downloads, and checks the bundle against after).
- :mod:`.mqtt` — MQTT topics and payloads between operator and device, and the signed
  envelope of every operator message (:mod:`.mqtt.signing`).
- :mod:`.statedir` — the device's state-directory layout and the local control API.

Standard library and numpy only (plus ``runtime.errors``/``runtime.spec``, and
``cryptography`` inside the functions that sign and verify); it imports
neither ``toolchain`` nor ``device_agent`` (tests/test_layering.py checks it). Importing this
package imports none of its modules.
"""
