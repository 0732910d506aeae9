"""One agent of a fleet, as the runner uses it: membership, the ownership filter, fleet alerts
and the agent's own metrics, started before the probes and left before they drain."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .. import __version__
from ..metrics import EventMetrics, Int, Kind
from ..targets import Target
from ._etcd import EtcdClient
from .alerts import FleetAlerts
from .depends import AgreedDependencies
from .membership import AgentInfo, Membership
from .ownership import Ownership
from .spec import FleetSpec

if TYPE_CHECKING:
    from ..alerting.service import AlertingService

__all__ = ["FleetAgent"]


class FleetAgent:
    """This process's membership in ``spec``'s fleet.

    :meth:`run` registers (raising :class:`~.membership.FleetNameInUse` for a live name), then
    keeps everything current until cancelled; :meth:`leave` revokes the lease (SIGTERM's first
    step, so the others take over at once).
    """

    def __init__(self, spec: FleetSpec, *, metrics_url: str = "", status_url: str = "") -> None:
        self.spec = spec
        info = AgentInfo(
            spec.agent,
            spec.zone,
            spec.weight,
            version=__version__,
            started=time.time(),
            metrics_url=metrics_url,
            status_url=status_url,
        )
        self.etcd = EtcdClient(spec.etcd)
        self.membership = Membership(self.etcd, spec.name, info, lease_ttl=spec.lease_ttl)
        self.ownership = Ownership(self.membership, spec.replicas)
        self.alerts: FleetAlerts | None = None

    @property
    def name(self) -> str:
        return self.spec.agent

    def snapshot_filter(self, probe: str, targets: tuple[Target, ...]) -> list[Target]:
        """The ownership filter, for the targets layer's seam."""
        return self.ownership.snapshot_filter(probe, targets)

    def on_ownership_change(self, callback: Callable[[], None]) -> None:
        self.ownership.on_change(callback)

    def use_alerts(self, service: AlertingService) -> FleetAlerts:
        """Agreed alerts for ``service``: its rules, holds, repeat intervals and notifiers; its
        ``depends_on`` holds judged from the fleet's agreed state."""
        self.alerts = FleetAlerts(
            self.membership,
            self.ownership,
            service.rule_of,
            service.send,
            hold=service.hold_reason,
            repeat_interval=service.repeat_interval,
            now=service.wall_time,
        )
        # depends_on from the fleet's verdicts: this agent does not probe what others own.
        service.holds.first_down = AgreedDependencies(self.alerts, service.health).first_down
        return self.alerts

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self.etcd, trio.open_nursery() as nursery:
            await nursery.start(self.membership.run)
            nursery.start_soon(self.ownership.run)
            if self.alerts is not None:
                nursery.start_soon(self.alerts.run)
            task_status.started()

    async def leave(self) -> None:
        await self.membership.leave()

    def self_metrics(self) -> list[EventMetrics]:
        """``trioprobe_fleet_*``: connected, members, owned targets, etcd writes, re-joins."""
        m = self.membership
        # Labelled as the runner's own metrics are (ptype="runner" first), beside the fleet's.
        gauges = EventMetrics(Kind.GAUGE).add_label("ptype", "runner")
        gauges.add_label("fleet", self.spec.name)
        gauges.add_metric("fleet_connected", Int(1 if m.connected else 0))
        gauges.add_metric("fleet_members", Int(len(m.live())))
        gauges.add_metric("fleet_owned_targets", Int(self.ownership.count()))
        counters = EventMetrics(Kind.CUMULATIVE).add_label("ptype", "runner")
        counters.add_label("fleet", self.spec.name)
        counters.add_metric("fleet_etcd_writes", Int(self.etcd.writes))
        counters.add_metric("fleet_reregistrations", Int(m.reregistrations))
        return [gauges, counters]
