"""Drift of live traffic against a bundle's baseline: pure numpy, no torch, no I/O.

- :mod:`.binning` — the one binning definition (quantile edges, bin index, per-feature
  layout, PSI), shared by the baseline the toolchain builds and the sketches on the device.
- :mod:`.reference` — build a :class:`~runtime.contracts.bundle.baseline.DriftBaseline` from
  validation inputs and the model's outputs on them (``edgeship package``).
- :mod:`.sketch` — bounded-memory histograms of live tensors over the baseline's bins, in a
  sliding window of sub-windows; scores per check (PSI, out-of-range share, NaN/Inf share,
  class mix and confidence).
- :mod:`.alarm` — the sustained-alarm rule (a score over its threshold for N checks in a row).
"""
