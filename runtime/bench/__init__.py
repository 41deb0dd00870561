"""On-device measuring core of ``edgeship bench``: statistics, timing loop, fingerprint, cell.

Needs only ``runtime``, numpy and the stdlib, so the device agent can profile a model without
torch or the toolchain. The toolchain (``toolchain.bench``) plans the matrix, runs each cell
in a fresh process via ``python -m runtime.bench.cell`` and writes the reports.
"""

from .errors import BatchShapeError, BenchError, CellSpecError, InputDataError
from .spec import CellSpec, Preset, RunLength, Scenario, scenario_for
from .stats import MIN_SAMPLES, LatencySummary, min_samples_for_percentile, quantile_ci, summarize

__all__ = [
    "BatchShapeError", "BenchError", "CellSpecError", "InputDataError", "CellSpec", "Preset",
    "RunLength", "Scenario", "scenario_for", "MIN_SAMPLES", "LatencySummary",
    "min_samples_for_percentile", "quantile_ci", "summarize",
]
