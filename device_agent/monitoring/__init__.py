"""What the agent tells its watchers besides answers: Prometheus metrics and on-device drift.

- :mod:`.collector` — the ``prometheus_client`` Collector behind ``GET /metrics``: it reads the
  agent's live state at scrape time (the one request window's totals, model events, the update
  journal, the telemetry queue, drift scores, process and SoC readings); nothing is counted twice.
- :mod:`.drift` — the device shell of drift detection: feeds live tensors to the pure sketches of
  :mod:`runtime.drift`, compares them with the bundle's baseline on a schedule, raises alarms.

``prometheus_client`` is imported only by the collector (the ``agent`` extra has it).
"""
