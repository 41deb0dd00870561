"""Staged rollouts (`edgeship rollout start/status/pause/resume/abort/rollback`, docs/fleet.md).

- :mod:`.plan` — the plan: release, target, waves, per-wave criteria (TOML and flags, strict).
- :mod:`.cohort` — who is targeted, and in which wave (pure).
- :mod:`.health` — install health and model health against the control cohort (pure; a
  sequential test with a minimum exposure).
- :mod:`.observe` — what the devices publish, validated (garbage marks a device failed).
- :mod:`.machine` — the rollout state machine (pure: state + view -> actions).
- :mod:`.journal` — the controller's journal (atomic, write-ahead) and its lock.
- :mod:`.controller` — the process: MQTT, the retained claim, control messages, the loop.
- :mod:`.status` — the status document and its table; :mod:`.cli` — the commands.
"""
