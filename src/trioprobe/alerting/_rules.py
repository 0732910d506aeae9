"""Which alert watches each probe: the ``[[alert]]`` naming it, else the one naming none.

Both the service's start and a reload build the probes' rules this way, so it is one function.
"""

from __future__ import annotations

from ..config import Config
from ..specs import AlertSpec
from .state import AlertRule

__all__ = ["rule_of", "rules_for"]


def rule_of(spec: AlertSpec) -> AlertRule:
    return AlertRule(
        name=spec.name,
        failure_threshold=spec.failure_threshold,
        success_threshold=spec.success_threshold,
        failures=spec.failures,
        total=spec.total,
        max_latency=spec.max_latency,
        burn_rate_above=spec.burn_rate_above,
        burn_rate_window=spec.burn_rate_window,
    )


def rules_for(config: Config) -> dict[str, AlertRule]:
    """Probe name -> the rule of the alert watching it; a probe no alert watches has none."""
    rules: dict[str, AlertRule] = {}
    catch_all = next((a for a in config.alerts if not a.probes), None)
    for spec, _ in config.probes:
        owner = next((a for a in config.alerts if spec.name in a.probes), catch_all)
        if owner is not None:
            rules[spec.name] = rule_of(owner)
    return rules
