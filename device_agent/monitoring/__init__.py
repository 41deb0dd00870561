"""What the agent tells its watchers besides answers: Prometheus metrics and on-device drift.

- :mod:`.collector` — the ``prometheus_client`` Collector behind ``GET /metrics``: it reads the
  agent's live state at scrape time (the one request window's totals, model events, the update
  journal, the telemetry queue, drift scores, process and SoC readings); nothing is counted twice.
- :mod:`.exposition` — its text: ``generate_latest``'s own, templated per family shape.
- :mod:`.process` — the ``process_*`` families read cheaply, and the 1 s sampler of the thermal zones.
- :mod:`.drift` — the device shell of drift detection: feeds live tensors to the pure sketches of
  :mod:`runtime.drift`, compares them with the bundle's baseline on a schedule, raises alarms.

``prometheus_client`` is imported only by the collector (the ``agent`` extra has it).
"""
