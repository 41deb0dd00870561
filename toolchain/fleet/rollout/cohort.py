"""Who a rollout targets and in which wave: pure functions of the plan and the fleet's
retained state (``status``: groups, arch, engines, agent version; ``reported``: active model).

Selector keys (``[target] select`` / ``--select K=V``, all must match): ``arch``, ``engine``
(one of the device's engines), ``group``, ``model`` and ``release`` (of the active model),
``agent_version``, ``online`` (``true``/``false``).

Waves: the targets in a stable order (sha256 of rollout id + device, so a resumed controller
computes the same waves and two rollouts do not always start on the same devices), cut into
the plan's sizes; the last wave takes whatever the sizes leave. A wave that would be empty
is refused (the plan asks for more waves than there are devices).
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

from ...errors import BadInputError
from .plan import RolloutPlan

SELECTOR_KEYS = ("arch", "engine", "group", "model", "release", "agent_version", "online")


def _facts(view: Any) -> dict[str, Any]:
    st = view.status if isinstance(getattr(view, "status", None), dict) else {}
    rep = view.reported if isinstance(getattr(view, "reported", None), dict) else {}
    active = rep.get("active") if isinstance(rep.get("active"), dict) else st.get("active")
    active = active if isinstance(active, dict) else {}
    return {"arch": st.get("arch"), "engine": st.get("engines") or [], "group": st.get("groups") or [],
            "model": active.get("name"), "release": str(active.get("release")), "agent_version": st.get("agent_version"),
            "online": "true" if st.get("online") else "false"}


def matches(view: Any, select: Mapping[str, str]) -> bool:
    f = _facts(view)
    for k, want in select.items():
        have = f[k]
        if isinstance(have, list) and want not in have or not isinstance(have, list) and str(have) != want:
            return False
    return True


def resolve_targets(plan: RolloutPlan, views: Mapping[str, Any]) -> list[str]:
    """The devices the plan targets.

    Raises:
        BadInputError: the target names nobody (what the fleet has is in the message), or an
            unknown selector key.
    """
    t = plan.target
    if t.devices:
        unknown = [d for d in t.devices if d not in views]
        if unknown:
            raise BadInputError(f"target devices {unknown} have no retained state in fleet {plan.fleet!r} "
                                f"(misspelled? `edgeship fleet status --fleet {plan.fleet}` lists the devices)")
        return sorted(set(t.devices))
    if t.group:
        found = sorted(d for d, v in views.items() if t.group in _facts(v)["group"])
    else:
        bad = sorted(set(t.select) - set(SELECTOR_KEYS))
        if bad:
            raise BadInputError(f"unknown selector key(s) {bad}; known: {list(SELECTOR_KEYS)}")
        found = sorted(d for d, v in views.items() if matches(v, t.select))
    if not found:
        seen = sorted({g for v in views.values() for g in _facts(v)["group"]})
        raise BadInputError(f"the plan targets nobody: no device of fleet {plan.fleet!r} matches {t.describe()} "
                            f"({len(views)} device(s) known; groups seen: {seen or 'none'}). Nothing was published.")
    return found


def assign_waves(plan: RolloutPlan, targets: list[str]) -> list[list[str]]:
    """The targets cut into the plan's waves, in a stable per-rollout order.

    Raises:
        BadInputError: a wave would get no device.
    """
    order = sorted(targets, key=lambda d: hashlib.sha256(f"{plan.id}/{d}".encode()).hexdigest())
    waves, taken = [], 0
    for i, spec in enumerate(plan.waves, 1):
        n = spec.count(len(order), taken)
        if i == len(plan.waves):
            n = len(order) - taken  # the last wave takes the rest
        if n < 1:
            raise BadInputError(f"wave {i} ({spec.size}) would get no device: waves 1-{i - 1} already take all "
                                f"{len(order)} target(s)" if taken else f"wave {i} ({spec.size}) would get no device")
        waves.append(order[taken:taken + n])
        taken += n
    return waves
