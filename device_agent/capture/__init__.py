"""Capture on the device: keep the requests the rules select, bounded on disk, for retraining.

- :mod:`.config` — the ``[capture]`` section (off unless turned on; rules, budgets, redaction hook).
- :mod:`.policy` — the pure decisions: which rules apply and fire, what the budgets evict.
- :mod:`.store` — the capture set on disk (atomic files, index, recovery after a crash).
- :mod:`.recorder` — the request-path shell (cheap decisions, bounded queue, writer thread).

The format of what is stored is the contract :mod:`runtime.contracts.capture.fileformat`.
"""
