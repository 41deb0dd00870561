"""The fleet simulator (`edgeship fleet simulate`): N simulated devices against a real broker.

- :mod:`.behaviour` — what the devices do: update outcomes, latency and errors per release,
  offline share, churn (typed, from flags or TOML; deterministic per device).
- :mod:`.device` — one device: the agent's control plane through the same contracts code
  (signature checks, version rules, release-counter rule, penalty box), its telemetry.
- :mod:`.fleet` — the runner: a few MQTT connections carry all devices; one timer thread.
"""
