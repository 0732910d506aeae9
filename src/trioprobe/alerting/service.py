"""``AlertingService``: health, notifications, metrics and the status page of a :class:`Runner`.

The runner feeds every result to :attr:`AlertingService.health` from each probe's stats keeper
(see :meth:`feed`) and runs :meth:`run` beside the keepers. Per probe, a task checks the target
list every probe interval (removed targets resolve), re-notifies firing alerts every
``repeat_interval``, and exports the ``up``/``alert_firing`` gauges and the ``transitions``
counter every stats interval, through the same channel as the keepers' metrics, so every surfacer
gets them. :meth:`finish` (called by the runner once the probes have stopped) makes a last
export, lets the notifiers drain and ends :meth:`run`.

The service decides what to notify and when; beside it, each in a module of its own: which
alert watches a probe (``_rules``), how one alert's notices are delivered (``_notifiers``), why
a notice is held (``_holds``), and the alert state's metrics (``_exports``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from urllib.parse import urlencode

import attrs
import trio

from .._asgi import ASGIApp, serve_asgi
from .._groups import open_nursery
from .._ticks import Ticker
from ..config import Config, ProbeSpec, StatusSpec
from ..metrics import EventMetrics
from ..results import ProbeResult
from ._exports import TargetsFn, export_health
from ._holds import Holds
from ._notifiers import AlertNotifiers
from ._rules import rule_of, rules_for
from .api import AlertsAPI, is_loopback, read_token
from .health import Health
from .notice import Notice
from .state import DOWN, UNKNOWN, UP, Transition
from .status import StatusPage

__all__ = ["AlertingService", "FleetSeam", "rule_of"]

logger = logging.getLogger("trioprobe.alerting")


class FleetSeam(Protocol):
    """What a fleet agent's alerts (trioprobe.fleet.alerts) take from the service: this agent's
    transitions (its votes), and a tick per probe interval (held fires and repeats); and what
    the alerts API asks of them instead of the service: the fleet's firings, and a fleet-wide
    acknowledgement (raising :class:`~.api.AckError` when it cannot be stored)."""

    def local(self, transition: Transition) -> None: ...

    def tick(self, probe: str) -> None: ...

    def listing(self) -> tuple[list[dict[str, object]], list[dict[str, object]]]: ...

    async def acknowledge(self, ident: str) -> bool: ...


class AlertingService:
    """Health state, notifications, metrics and the status page for one runner's probes."""

    def __init__(self, config: Config) -> None:
        self.config = config
        labels = {spec.name: spec.labels for spec, _ in config.probes}
        self.alerts = {
            a.name: AlertNotifiers(
                a,
                config.shutdown_grace,
                probe_labels=labels,
                generator_url=self.detail_url,
            )
            for a in config.alerts
        }
        self.health = Health(rules_for(config))
        self.health.add_listener(self._on_transition)
        #: The status server's app (status page and alerts API), once serving.
        self.api: AlertsAPI | None = None
        # The runner's reloads add and remove probes and alerts while running (see watch,
        # unwatch and update_config).
        self._nursery: trio.Nursery | None = None
        self._alerts_nursery: trio.Nursery | None = None
        self._export_send: trio.MemorySendChannel[EventMetrics] | None = None
        self._watched: dict[str, tuple[ProbeSpec, TargetsFn, trio.CancelScope]] = {}
        # Set when an alert's task has returned (its queues released), by id of its AlertNotifiers.
        self._alert_done: dict[int, trio.Event] = {}
        #: The status page's base URL, once serving (``None`` without a ``[status]`` table).
        self.status_url: str | None = None
        #: Wrapped around the status server's app, in order (a fleet agent adds ``/fleet``).
        self.status_wrappers: list[Callable[[ASGIApp], ASGIApp]] = []
        # (probe, target) -> (trio time of the last notice, repeats sent) of firing alerts.
        self._firing: dict[tuple[str, str], tuple[float, int]] = {}
        #: (probe, target) -> why its alert is held, for targets down whose fire waits.
        self.held: dict[tuple[str, str], str] = {}
        #: Firing alerts acknowledged: no repeats until they resolve.
        self.acknowledged: set[tuple[str, str]] = set()
        #: Why notifications are held now (dependencies down, maintenance windows open).
        self.holds = Holds(self.health, config)
        self._probe_labels = labels
        self._finished = trio.Event()
        #: The runner's history service (for the status page), when ``[history]`` is set.
        self.history: Any = None
        #: In a fleet, each transition is this agent's vote, and notices (fires, held fires
        #: released, repeats, resolves) come from the fleet's agreed verdict
        #: (trioprobe.fleet.alerts) through :meth:`send`, not from here.
        self.fleet: FleetSeam | None = None

    def send(self, alert: str, notice: Notice) -> None:
        """Hand ``notice`` to the notifiers of the alert named ``alert`` (the fleet's path: it
        has applied the holds and the repeat schedule itself)."""
        target = self.alerts.get(alert)
        if target is not None:
            target.notify(notice)

    def repeat_interval(self, alert: str) -> float:
        """Seconds between the repeats of the alert named ``alert`` (0: none)."""
        spec = self.alerts.get(alert)
        return spec.spec.repeat_interval if spec is not None else 0.0

    def rule_of(self, probe: str) -> tuple[str, int]:
        """The name of the alert watching ``probe`` ("" if none) and its quorum."""
        name = self.health.rule_for(probe).name
        alert = self.alerts.get(name)
        return name, alert.spec.quorum if alert is not None else 1

    def detail_url(self, probe: str, target: str) -> str:
        """The status page's URL for one probe x target ("" without a status page)."""
        if self.status_url is None:
            return ""
        return f"{self.status_url}?{urlencode({'probe': probe, 'target': target})}"

    def feed(self, probe: str, result: ProbeResult) -> None:
        """Evaluate one result (the runner's tap on the results path)."""
        self.health.feed(probe, result)

    def finish(self) -> None:
        """The probes have stopped: export once more, drain the notifiers and end :meth:`run`."""
        self._finished.set()

    def _on_transition(self, transition: Transition) -> None:
        if self.fleet is not None:
            self.fleet.local(transition)
            return
        key = (transition.probe, transition.target)
        alert = self.alerts.get(transition.alert)
        restored = alert.restored.pop(key, None) if alert is not None else None
        if transition.fires:
            if restored is not None:
                # Still down after a restart: the fire was sent by the previous run; carry on
                # with its repeats instead of firing twice.
                self._firing[key] = (trio.current_time(), restored.repeats)
                return
            why = self.hold_reason(transition.alert, *key)
            if why is not None:
                # Held (blocked or in maintenance): fired, if still down, once released.
                self.held[key] = why
                return
            self._firing[key] = (trio.current_time(), 0)
            notice = Notice("fire", transition)
        elif transition.resolves:
            self.held.pop(key, None)
            self.acknowledged.discard(key)
            if self._firing.pop(key, None) is None:
                return  # its fire was held: nobody was told, nobody needs the resolve
            notice = Notice("resolve", transition)
        elif restored is not None:
            # unknown -> up after a restart: resolve what the previous run fired.
            notice = Notice("resolve", attrs.evolve(transition, old=DOWN))
        else:
            return
        if alert is not None:
            alert.notify(notice)

    def wall_time(self) -> float:
        """Wall-clock now, advancing with Trio's clock (see :meth:`Holds.wall_time`)."""
        return self.holds.wall_time()

    def hold_reason(self, alert: str, probe: str, target: str) -> str | None:
        """Why notifications for ``probe``/``target`` are held now (see :class:`Holds`)."""
        return self.holds.hold_reason(alert, probe, target)

    def set_aside(self, probe: str, target: str) -> str | None:
        """How history counts a result of ``probe``/``target`` made now (see :class:`Holds`)."""
        return self.holds.set_aside(probe, target)

    def _release(self, probe: str) -> None:
        """Fire the held alerts of ``probe`` whose hold is over and that are still down."""
        for key in [k for k in self.held if k[0] == probe]:
            entry = self.health.entry(*key)
            if entry is None or entry.state != DOWN:
                del self.held[key]
                continue
            why = self.hold_reason(entry.rule.name, *key)
            if why is not None:
                self.held[key] = why
                continue
            del self.held[key]
            self._firing[key] = (trio.current_time(), 0)
            alert = self.alerts.get(entry.rule.name)
            if alert is not None:
                alert.notify(Notice("fire", entry.firing()))

    def acknowledge(self, key: str) -> bool:
        """Stop the repeats of the firing alert whose fire notice has ``key``, until it
        resolves; whether such an alert was firing."""
        for probe, target in self._firing:
            entry = self.health.entry(probe, target)
            if entry is None or entry.state != DOWN:
                continue
            if self.fire_key(probe, target) == key:
                self.acknowledged.add((probe, target))
                logger.info("alert on probe %r target %r acknowledged", probe, target)
                return True
        return False

    def fire_key(self, probe: str, target: str) -> str | None:
        """The id of the firing alert of ``probe``/``target`` (its fire notice's key)."""
        entry = self.health.entry(probe, target)
        if entry is None or entry.state != DOWN or (probe, target) not in self._firing:
            return None
        return Notice("fire", attrs.evolve(entry.firing(), old=UP)).key

    @staticmethod
    def _resolve_restored(alert: AlertNotifiers, gone: list[tuple[str, str]]) -> None:
        """Resolve the alerts a previous run fired for (probe, target) pairs that are ``gone``."""
        for key in gone:
            fired = alert.restored.pop(key).notice.transition
            alert.notify(
                Notice(
                    "resolve",
                    attrs.evolve(fired, old=DOWN, new=UNKNOWN, since=time.time(), reason="removed"),
                )
            )

    async def run(
        self,
        export: trio.MemorySendChannel[EventMetrics],
        probes: Sequence[tuple[ProbeSpec, TargetsFn]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until :meth:`finish`; owns ``export`` (pass a clone) and closes it when done."""
        self.holds.start_clock()
        try:
            await self._run(export, probes, task_status)
        finally:
            # Also when cancelled: subscribers' loops end instead of waiting forever.
            self.health.close()

    async def _run(
        self,
        export: trio.MemorySendChannel[EventMetrics],
        probes: Sequence[tuple[ProbeSpec, TargetsFn]],
        task_status: trio.TaskStatus[None],
    ) -> None:
        async with export, open_nursery() as nursery:
            notifiers_done = trio.Event()
            await nursery.start(self._run_alerts, notifiers_done)
            watched = {
                name: {
                    spec.name for spec, _ in probes if self.health.rule_for(spec.name).name == name
                }
                for name in self.alerts
            }
            for name, alert in self.alerts.items():
                # A probe this alert no longer watches cannot resolve what it fired.
                gone = [k for k in alert.restored if k[0] not in watched[name]]
                self._resolve_restored(alert, gone)
            if self.config.status is not None:
                await self._serve_status(nursery, self.config.status)
            self._nursery, self._export_send = nursery, export
            for spec, targets in probes:
                self.watch(spec, targets)
            task_status.started()
            await self._finished.wait()
            for spec, targets, scope in list(self._watched.values()):
                scope.cancel()
                await export_health(self.health, spec, targets, export)
            for alert in self.alerts.values():
                alert.inbox.close()
            with trio.move_on_after(self.config.shutdown_grace):
                await notifiers_done.wait()
            nursery.cancel_scope.cancel()

    async def _serve_status(self, nursery: trio.Nursery, status: StatusSpec) -> None:
        from ..runner import StartupError  # here: the runner imports this module

        try:
            token = await trio.to_thread.run_sync(read_token, status)
        except ValueError as exc:
            raise StartupError(f"the status page could not start: {exc}") from None
        page = StatusPage(
            self.health,
            refresh=status.refresh,
            history=self.history,
            order=[spec.name for spec, _ in self.config.probes],
            hold=self.hold_reason,
        )
        app = self.api = AlertsAPI(self, page, token=token, loopback=is_loopback(status.host))
        served: ASGIApp = app
        for wrap in self.status_wrappers:
            served = wrap(served)
        try:
            url = await nursery.start(serve_asgi, served, status.host, status.port)
        except OSError as exc:
            # Name the part that failed: the runner would otherwise blame "alerting",
            # which a config with no [[alert]] does not even have.
            raise StartupError(f"the status page could not start: {exc}") from exc
        self.status_url = f"{url}/status"
        logger.info("status page at %s", self.status_url)

    def firing_keys(self) -> list[tuple[str, str]]:
        """The (probe, target) pairs whose alert is firing (notified, not resolved)."""
        return [k for k in self._firing if self.health.rule_for(k[0]).name]

    async def _run_alerts(
        self, done: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with open_nursery() as nursery:
                self._alerts_nursery = nursery
                for alert in self.alerts.values():
                    await nursery.start(self._run_alert, alert)
                task_status.started()
        finally:
            done.set()

    async def _run_alert(
        self,
        alert: AlertNotifiers,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        done = self._alert_done[id(alert)] = trio.Event()
        try:
            await alert.run(task_status=task_status)
        finally:
            done.set()

    def watch(self, spec: ProbeSpec, targets: TargetsFn) -> None:
        """Follow ``spec``'s probe: its target list, repeats and metrics (at start, and for a
        probe a reload adds or restarts)."""
        assert self._nursery is not None
        assert self._export_send is not None
        scope = trio.CancelScope()
        self._watched[spec.name] = (spec, targets, scope)
        self._nursery.start_soon(self._watch, spec, targets, self._export_send, scope)

    async def _watch(
        self,
        spec: ProbeSpec,
        targets: TargetsFn,
        export: trio.MemorySendChannel[EventMetrics],
        scope: trio.CancelScope,
    ) -> None:
        with scope:
            await self._probe_loop(spec, targets, export)

    async def unwatch(self, probe: str, *, forget: bool) -> None:
        """Stop following ``probe`` after one last export (a reload removed or restarts it).
        With ``forget`` (removed) its targets are dropped, resolving what fired."""
        watched = self._watched.pop(probe, None)
        if watched is None or self._export_send is None:
            return
        spec, targets, scope = watched
        scope.cancel()
        await export_health(self.health, spec, targets, self._export_send)
        if forget:
            self.health.set_targets(probe, ())

    async def update_config(self, config: Config) -> None:
        """A reload: each probe's rule follows the new ``[[alert]]`` tables (target states are
        kept, and their rule is replaced); alerts whose table is unchanged keep their
        notifiers and queues; changed and new ones start theirs, removed ones drain. The
        ``[status]`` page is not moved (see docs/config.md, Reload)."""
        assert self._alerts_nursery is not None
        old, self.config = self.alerts, config
        self._probe_labels = {spec.name: spec.labels for spec, _ in config.probes}
        self.holds.update(config)
        self.alerts = {}
        for spec in config.alerts:
            kept = old.get(spec.name)
            if kept is not None and kept.spec == spec:
                self.alerts[spec.name] = kept
                continue
            if kept is not None:
                # Its queue directories go to the new one: wait until they are released.
                kept.inbox.close()
                with trio.move_on_after(config.shutdown_grace):
                    await self._alert_done[id(kept)].wait()
            alert = AlertNotifiers(
                spec,
                config.shutdown_grace,
                probe_labels=self._probe_labels,
                generator_url=self.detail_url,
            )
            self.alerts[spec.name] = alert
            await self._alerts_nursery.start(self._run_alert, alert)
        for name, alert in old.items():
            if name not in self.alerts:
                alert.inbox.close()  # it drains its queue and returns
        self._set_rules(config)

    def _set_rules(self, config: Config) -> None:
        rules = rules_for(config)
        self.health.rules = rules
        for name in rules.keys() | {spec.name for spec, _ in config.probes}:
            rule = self.health.rule_for(name)
            for h in self.health.entries(name):
                h.rule = rule

    async def _probe_loop(
        self,
        spec: ProbeSpec,
        targets: TargetsFn,
        export: trio.MemorySendChannel[EventMetrics],
    ) -> None:
        exports = Ticker(spec.export_interval)
        async for _ in Ticker(spec.interval):
            listed = set(targets())
            self.health.set_targets(spec.name, listed)
            self._release(spec.name)
            alert = self.alerts.get(self.health.rule_for(spec.name).name)
            if alert is not None and alert.restored:
                gone = [k for k in alert.restored if k[0] == spec.name and k[1] not in listed]
                self._resolve_restored(alert, gone)
            self._repeat(spec.name)
            if self.fleet is not None:
                self.fleet.tick(spec.name)
            if exports.poll() is not None:
                await export_health(self.health, spec, targets, export)

    def _repeat(self, probe: str) -> None:
        rule = self.health.rule_for(probe)
        alert = self.alerts.get(rule.name)
        if alert is None or alert.spec.repeat_interval <= 0 or self.fleet is not None:
            return
        now = trio.current_time()
        for h in self.health.entries(probe):
            key = (probe, h.target)
            if h.state != DOWN or key not in self._firing or key in self.acknowledged:
                continue
            if self.hold_reason(rule.name, probe, h.target) is not None:
                continue
            last, repeats = self._firing[key]
            if now - last >= alert.spec.repeat_interval:
                self._firing[key] = (now, repeats + 1)
                alert.notify(Notice("repeat", h.firing(), repeat=repeats + 1))
