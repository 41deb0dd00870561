"""Helpers over the tensors of one inference call (name -> array mappings), numpy-free.

:func:`call_nbytes` is what the device's bounded buffers of calls (the drift monitor's pending
calls, the capture recorder's recent calls) count against their byte limits.
"""

from __future__ import annotations

from typing import Any, Mapping


def call_nbytes(feeds: Mapping[str, Any], outputs: Mapping[str, Any]) -> int:
    """Bytes of a call's input and output arrays (``nbytes`` of each; a value without one counts 0).
    A plain loop: it runs on the request thread, over the call's two or three arrays."""
    size = 0
    for a in feeds.values():
        size += getattr(a, "nbytes", 0)
    for a in outputs.values():
        size += getattr(a, "nbytes", 0)
    return size
