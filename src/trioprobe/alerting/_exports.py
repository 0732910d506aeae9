"""The alert state's metrics: ``health_up``, ``alert_firing`` and ``health_transitions``.

Exported per probe through the keepers' channel, labelled like the keeper's own series plus the
``alert`` label; a view of :class:`~trioprobe.alerting.health.Health`, apart from the service
that decides when to export.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

import trio

from ..metrics import EventMetrics, Int, Kind
from ..specs import ProbeSpec
from ..targets import ProbeTargets
from .health import Health
from .state import DOWN, UNKNOWN, UP

__all__ = ["TargetsFn", "export_health"]

#: A probe's current targets.
TargetsFn = Callable[[], Iterable[str]]


async def export_health(
    health: Health,
    spec: ProbeSpec,
    targets: TargetsFn,
    export: trio.MemorySendChannel[EventMetrics],
) -> None:
    """Send the alert state of ``spec``'s listed targets on ``export``."""
    listed = set(targets())
    # Discovery labels, when the targets come from the targets layer (docs/targets.md).
    labels_of: Callable[[str], Mapping[str, str]] | None = (
        targets.labels_of if isinstance(targets, ProbeTargets) else None
    )
    now = time.time()
    for h in health.entries(spec.name):
        if h.target not in listed:
            continue
        gauge = EventMetrics(Kind.GAUGE, now)
        if h.state != UNKNOWN:
            gauge.add_metric("health_up", Int(1 if h.state == UP else 0))
        gauge.add_metric("alert_firing", Int(1 if h.state == DOWN and h.rule.name else 0))
        counter = EventMetrics(Kind.CUMULATIVE, now)
        counter.add_metric("health_transitions", Int(h.transitions))
        for em in (gauge, counter):
            # The alert label keeps these apart from the keeper's own metrics of the same
            # target (same ptype/probe/dst), which a surfacer keys by label set.
            em.add_label("ptype", spec.type).add_label("probe", spec.name)
            em.add_label("dst", h.target).add_label("alert", h.rule.name)
            for k, v in spec.labels.items():
                em.add_label(k, v)
            for k, v in (labels_of(h.target) if labels_of is not None else {}).items():
                em.add_label(k, v)
            await export.send(em)
