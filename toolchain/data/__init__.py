"""`edgeship data`: captured device data on the host (inspect, split) and what compile reads of it.

- :mod:`.captures` — a verified capture set as samples, compile arrays and build provenance.
- :mod:`.inspect` — per tensor range and distribution against a bundle's baseline, class mix,
  per device and release.
- :mod:`.split` — calibration/validation sets, deduplicated by content, stratified per device.
- :mod:`.cli` — the commands.
"""
