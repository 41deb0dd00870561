"""``edgeship bench``: plan the matrix, measure each cell in a fresh process, report.

The measuring itself lives in :mod:`runtime.bench` (device-side, no torch). This package
plans cells (:mod:`.plan`), runs them (:mod:`.runner`), assembles the schema-versioned result
(:mod:`.result`), analyses it (:mod:`.analysis`: speedups, recommendation, int8 notes),
compares two results (:mod:`.compare`) and writes reports (:mod:`.report_md`, :mod:`.report_html`).
Public Python API: :mod:`.api`.
"""
