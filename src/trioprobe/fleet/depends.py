"""``depends_on`` in a fleet: a dependency is down when the fleet agrees it is.

An agent probes only the targets it owns, so its own view of a dependency owned by others is
empty: judged from it, such a dependency never counts as down, and a dependency's outage pages
for every dependent target whose notifier does not own the dependency. Here the dependency is
judged from the votes every agent publishes, as the notifier mirrors them for quorum
(:attr:`FleetAlerts.agreed_down`), with the same quorum as alerting on it would use, so every
agent, whichever notifies, holds the same fires.

This agent's own view is used as well where one vote is the quorum (the dependency's probe is
watched with ``quorum = 1``, or by no alert): the agent owns what it probes, so its vote alone
makes the fleet's verdict down as soon as etcd has it; reading it locally saves that round trip.
With a larger quorum its view alone does not count: one flaky vantage point holds nobody's pages.
"""

from __future__ import annotations

from collections.abc import Collection

from ..alerting.depends import first_down
from ..alerting.health import Health
from .alerts import FleetAlerts

__all__ = ["AgreedDependencies"]


class AgreedDependencies:
    """A :data:`~trioprobe.alerting._holds.DependencyJudge` reading the fleet's agreed state.

    Each question costs a few dict lookups per dependency (and, for a dependency with a quorum
    of one, a walk of this agent's own entries of its probe, as without a fleet): the verdicts
    themselves are computed once per mirror change by :meth:`FleetAlerts.evaluate`.
    """

    def __init__(self, alerts: FleetAlerts, health: Health) -> None:
        self.alerts = alerts
        self.health = health

    def first_down(
        self, dependencies: Collection[tuple[str, str | None]]
    ) -> tuple[str, str] | None:
        """The first dependency the fleet agrees is down, as (probe, target), or ``None``."""
        agreed = self.alerts.agreed_down
        for probe, target in dependencies:
            down = agreed.get(probe)
            if not down:
                continue
            if target is None:
                return probe, min(down)
            if target in down:
                return probe, target
        own = [d for d in dependencies if self.alerts.rule_of(d[0])[1] <= 1]
        return first_down(self.health, own) if own else None
