"""``depends_on``: a target whose dependency is down is ``blocked``, not paged.

A dependency is a probe (``"gw"``: down while any of its targets is down) or one probe x target
(``"gw:10.0.0.1:80"``: the probe's name, a colon, the target verbatim). While one of an alert's
dependencies is down, its targets that go down send nothing; once every dependency is up again,
each of them is evaluated afresh: one still down fires then, one that recovered meanwhile sends
nothing at all. A child that had fired before its parent went down stays fired (and resolves as
usual).
"""

from __future__ import annotations

from collections.abc import Collection

from .health import Health
from .state import DOWN

__all__ = ["parse_dependency", "first_down"]


def parse_dependency(item: str, probes: Collection[str]) -> tuple[str, str | None]:
    """``(probe, target)`` of one ``depends_on`` entry (``target`` ``None``: the whole probe)."""
    if item in probes:
        return item, None
    probe, sep, target = item.partition(":")
    if sep and target and probe in probes:
        return probe, target
    raise ValueError(
        f"{item!r} names no probe: expected a probe name or probe:target "
        f"(probes: {', '.join(sorted(probes)) or 'none'})"
    )


def first_down(
    health: Health, dependencies: Collection[tuple[str, str | None]]
) -> tuple[str, str] | None:
    """The first dependency found down, as (probe, target), or ``None``."""
    for probe, target in dependencies:
        for h in health.entries(probe):
            if h.state == DOWN and (target is None or h.target == target):
                return probe, h.target
    return None
