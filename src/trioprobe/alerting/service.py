"""``AlertingService``: health, notifications, metrics and the status page of a :class:`Runner`.

The runner feeds every result to :attr:`AlertingService.health` from each probe's stats keeper
(see :meth:`feed`) and runs :meth:`run` beside the keepers. Per probe, a task checks the target
list every probe interval (removed targets resolve), re-notifies firing alerts every
``repeat_interval``, and exports the ``up``/``alert_firing`` gauges and the ``transitions``
counter every stats interval, through the same channel as the keepers' metrics, so every surfacer
gets them. :meth:`finish` (called by the runner once the probes have stopped) makes a last
export, lets the notifiers drain and ends :meth:`run`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import trio

from .._asgi import serve_asgi
from .._groups import open_nursery
from ..config import AlertSpec, Config, ProbeSpec
from ..metrics import EventMetrics, Int, Kind
from ..results import ProbeResult
from .health import Health
from .notify import (
    NOTICE_BUFFER,
    CommandNotifier,
    Notice,
    WebhookNotifier,
    log_notice,
)
from .state import DOWN, UNKNOWN, UP, AlertRule, Transition
from .status import StatusPage

__all__ = ["AlertingService", "rule_of"]

logger = logging.getLogger("trioprobe.alerting")

Notifier = CommandNotifier | WebhookNotifier
TargetsFn = Callable[[], Iterable[str]]


def rule_of(spec: AlertSpec) -> AlertRule:
    return AlertRule(
        name=spec.name,
        failure_threshold=spec.failure_threshold,
        success_threshold=spec.success_threshold,
        failures=spec.failures,
        total=spec.total,
        max_latency=spec.max_latency,
    )


class _Alert:
    """One ``[[alert]]``'s notifiers and the channels feeding them."""

    def __init__(self, spec: AlertSpec, drain_timeout: float) -> None:
        self.spec = spec
        self.notifiers: list[Notifier] = []
        if spec.command:
            self.notifiers.append(CommandNotifier(spec.command, spec.command_timeout))
        if spec.webhook:
            self.notifiers.append(
                WebhookNotifier(
                    spec.webhook,
                    spec.webhook_queue_dir,
                    alert=spec.name,
                    timeout=spec.webhook_timeout,
                    drain_timeout=drain_timeout,
                )
            )
        self.channels = [trio.open_memory_channel[Notice](NOTICE_BUFFER) for _ in self.notifiers]
        #: Notices a notifier was too far behind to take.
        self.dropped = 0

    def notify(self, notice: Notice) -> None:
        if self.spec.log:
            log_notice(notice)
        for notifier, (send, _) in zip(self.notifiers, self.channels, strict=True):
            try:
                send.send_nowait(notice)
            except trio.WouldBlock:
                self.dropped += 1
                logger.warning("%s is %d notices behind: dropped one", notifier.name, NOTICE_BUFFER)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The notifier has stopped (shutdown): nothing left to tell.
                pass


class AlertingService:
    """Health state, notifications, metrics and the status page for one runner's probes."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.alerts = {a.name: _Alert(a, config.shutdown_grace) for a in config.alerts}
        rules: dict[str, AlertRule] = {}
        catch_all = next((a for a in config.alerts if not a.probes), None)
        for spec, _ in config.probes:
            owner = next((a for a in config.alerts if spec.name in a.probes), catch_all)
            if owner is not None:
                rules[spec.name] = rule_of(owner)
        self.health = Health(rules)
        self.health.add_listener(self._on_transition)
        # The runner's reloads add and remove probes while running (see watch/unwatch).
        self._nursery: trio.Nursery | None = None
        self._notifier_nursery: trio.Nursery | None = None
        self._export_send: trio.MemorySendChannel[EventMetrics] | None = None
        self._watched: dict[str, tuple[ProbeSpec, TargetsFn, trio.CancelScope]] = {}
        #: The status page's base URL, once serving (``None`` without a ``[status]`` table).
        self.status_url: str | None = None
        # (probe, target) -> (trio time of the last notice, repeats sent) of firing alerts.
        self._firing: dict[tuple[str, str], tuple[float, int]] = {}
        self._finished = trio.Event()
        #: In a fleet, each transition is this agent's vote, and notices come from the fleet's
        #: agreed verdict (trioprobe.fleet.alerts) through :meth:`send`, not from here.
        self.vote: Callable[[Transition], None] | None = None

    def send(self, alert: str, notice: Notice) -> None:
        """Hand ``notice`` to the notifiers of the alert named ``alert`` (the fleet's path)."""
        target = self.alerts.get(alert)
        if target is not None:
            target.notify(notice)

    def rule_of(self, probe: str) -> tuple[str, int]:
        """The name of the alert watching ``probe`` ("" if none) and its quorum."""
        name = self.health.rule_for(probe).name
        alert = self.alerts.get(name)
        return name, alert.spec.quorum if alert is not None else 1

    def feed(self, probe: str, result: ProbeResult) -> None:
        """Evaluate one result (the runner's tap on the results path)."""
        self.health.feed(probe, result)

    def finish(self) -> None:
        """The probes have stopped: export once more, drain the notifiers and end :meth:`run`."""
        self._finished.set()

    def _on_transition(self, transition: Transition) -> None:
        if self.vote is not None:
            self.vote(transition)
            return
        key = (transition.probe, transition.target)
        alert = self.alerts.get(transition.alert)
        if transition.fires:
            self._firing[key] = (trio.current_time(), 0)
            notice = Notice("fire", transition)
        elif transition.resolves:
            self._firing.pop(key, None)
            notice = Notice("resolve", transition)
        else:
            return
        if alert is not None:
            alert.notify(notice)

    async def run(
        self,
        export: trio.MemorySendChannel[EventMetrics],
        probes: Sequence[tuple[ProbeSpec, TargetsFn]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until :meth:`finish`; owns ``export`` (pass a clone) and closes it when done."""
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
            notifier_nursery_done = trio.Event()
            await nursery.start(self._run_notifiers, notifier_nursery_done)
            status = self.config.status
            if status is not None:
                page = StatusPage(self.health, refresh=status.refresh)
                try:
                    url = await nursery.start(serve_asgi, page, status.host, status.port)
                except OSError as exc:
                    # Name the part that failed: the runner would otherwise blame "alerting",
                    # which a config with no [[alert]] does not even have.
                    from ..runner import StartupError  # here: the runner imports this module

                    raise StartupError(f"the status page could not start: {exc}") from exc
                self.status_url = f"{url}/status"
                logger.info("status page at %s", self.status_url)
            self._nursery, self._export_send = nursery, export
            for spec, targets in probes:
                self.watch(spec, targets)
            task_status.started()
            await self._finished.wait()
            for spec, targets, scope in self._watched.values():
                scope.cancel()
                await self._export(spec, targets, export)
            for alert in self.alerts.values():
                for send, _ in alert.channels:
                    send.close()
            with trio.move_on_after(self.config.shutdown_grace):
                await notifier_nursery_done.wait()
            nursery.cancel_scope.cancel()

    async def _run_notifiers(
        self, done: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with open_nursery() as nursery:
                self._notifier_nursery = nursery
                for alert in self.alerts.values():
                    await self._start_notifiers(alert)
                task_status.started()
        finally:
            done.set()

    async def _start_notifiers(self, alert: _Alert) -> None:
        assert self._notifier_nursery is not None
        for notifier, (_, receive) in zip(alert.notifiers, alert.channels, strict=True):
            await self._notifier_nursery.start(notifier.run, receive)

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
        await self._export(spec, targets, self._export_send)
        if forget:
            self.health.set_targets(probe, ())

    async def update_config(self, config: Config) -> None:
        """A reload: each probe's rule follows the new ``[[alert]]`` tables (target states are
        kept, and their rule is replaced); alerts whose table is unchanged keep their
        notifiers and queues; changed and new ones start theirs, removed ones drain."""
        old, self.config = self.alerts, config
        self.alerts = {}
        for spec in config.alerts:
            kept = old.get(spec.name)
            if kept is not None and kept.spec == spec:
                self.alerts[spec.name] = kept
                continue
            alert = self.alerts[spec.name] = _Alert(spec, config.shutdown_grace)
            await self._start_notifiers(alert)
        for name, alert in old.items():
            if self.alerts.get(name) is not alert:
                for send, _ in alert.channels:
                    send.close()  # the notifier drains its queue and returns
        catch_all = next((a for a in config.alerts if not a.probes), None)
        rules: dict[str, AlertRule] = {}
        for probe_spec, _ in config.probes:
            name = probe_spec.name
            owner = next((a for a in config.alerts if name in a.probes), catch_all)
            if owner is not None:
                rules[name] = rule_of(owner)
        self.health.rules = rules
        for probe in {spec.name for spec, _ in config.probes}:
            rule = self.health.rule_for(probe)
            for h in self.health.entries(probe):
                h.rule = rule

    async def _probe_loop(
        self,
        spec: ProbeSpec,
        targets: TargetsFn,
        export: trio.MemorySendChannel[EventMetrics],
    ) -> None:
        next_export = trio.current_time() + spec.export_interval
        while True:
            await trio.sleep(spec.interval)
            self.health.set_targets(spec.name, targets())
            self._repeat(spec.name)
            if trio.current_time() >= next_export:
                next_export += spec.export_interval * max(
                    1, int((trio.current_time() - next_export) // spec.export_interval) + 1
                )
                await self._export(spec, targets, export)

    def _repeat(self, probe: str) -> None:
        rule = self.health.rule_for(probe)
        alert = self.alerts.get(rule.name)
        if alert is None or alert.spec.repeat_interval <= 0 or self.vote is not None:
            return
        now = trio.current_time()
        for h in self.health.entries(probe):
            key = (probe, h.target)
            if h.state != DOWN or key not in self._firing:
                continue
            last, repeats = self._firing[key]
            if now - last >= alert.spec.repeat_interval:
                self._firing[key] = (now, repeats + 1)
                alert.notify(Notice("repeat", h.firing(), repeat=repeats + 1))

    async def _export(
        self, spec: ProbeSpec, targets: TargetsFn, export: trio.MemorySendChannel[EventMetrics]
    ) -> None:
        listed = set(targets())
        # Discovery labels, when the targets come from the targets layer (docs/targets.md).
        labels_of: Callable[[str], Mapping[str, str]] | None = getattr(targets, "labels_of", None)
        now = time.time()
        for h in self.health.entries(spec.name):
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
