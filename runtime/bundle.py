"""Old import path of the bundle contract, which now lives in :mod:`runtime.contracts.bundle`.

Kept for one import only, ``toolchain/compile/verify.py``'s ``Precision`` (another helper is
changing that package meanwhile); remove this module once it imports runtime.contracts.bundle.
"""

from __future__ import annotations

from .contracts.bundle.schema import Precision

__all__ = ["Precision"]
