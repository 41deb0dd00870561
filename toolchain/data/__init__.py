"""`edgeship data`: captured device data on the host (inspect, split) and what compile reads of it.

- :mod:`.captures` — a verified capture set as samples, compile arrays, labelled training
  arrays (:func:`load_labelled`, also importable from here) and build provenance.
- :mod:`.inspect` — per tensor range and distribution against a bundle's baseline, class mix,
  per device and release.
- :mod:`.split` — calibration/validation sets, deduplicated by content, stratified per device.
- :mod:`.cli` — the commands.
"""

from .captures import load_labelled

__all__ = ["load_labelled"]
