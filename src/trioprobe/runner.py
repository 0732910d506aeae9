"""The runner: one nursery holding targets -> probes -> tee -> (keeper, alerting) -> fan-out ->
surfacers, each probe a unit under its own cancel scope so a reload replaces only what changed.

Results flow one way: a probe sends them to its tee, which hands each to alerting (and the
``on_result`` callback) and forwards it to the probe's stats keeper; keepers, alerting and the
runner's own collectors send exports to the fan-out, which copies them to every surfacer.

Shutdown is cancellation in phases, each ending the next one's input::

    shutdown()  -> every probe unit's cancel scope is cancelled; each probe's results channel
                   closes
                -> each tee ends, then its keeper makes its final export and closes its export
                -> the fan-out sees EndOfChannel once every exporter is done, closes surfacer
                   channels
                -> surfacers drain and flush, under a deadline of ``shutdown_grace`` seconds

so the last results a probe produced still reach every surfacer. Cancelling the task that runs
:meth:`Runner.run` instead stops everything at once, with no final export.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._deprecated import renamed_keyword
from ._fdlimit import ensure_fd_limit, fd_needs
from ._gc import DEFAULT_RECLAIM_EVERY, GcGovernor
from ._groups import open_nursery
from ._looplag import LAG_BUCKETS, LAG_METRIC, watch_loop_lag
from .alerting import AlertingService, Health
from .config import (
    DEFAULT_SURFACER_BUFFER,
    Config,
    ConfigError,
    ProbeSpec,
    load_config,
    target_checker,
)
from .history import HistoryService
from .metrics import EventMetrics, Kind
from .probes import Probe, probe_types
from .probes._base import ScheduledProbe, send_result
from .reload import ReloadOutcome, ReloadPlan, ReloadStats, plan_reload
from .results import LATENCY_UNITS, ProbeResult
from .stats import StatsKeeper
from .surfacers import (
    Fanout,
    LiveMetrics,
    Reloadable,
    SelfMetrics,
    Surfacer,
    surfacer_types,
)
from .targets import ProbeTargets, SnapshotFilter, SourceError, sources_for

if TYPE_CHECKING:
    from .fleet.agent import FleetAgent

__all__ = ["Collector", "Runner", "StartupError", "run"]

logger = logging.getLogger("trioprobe.runner")

# Keepers hand exports to the fan-out through this; results reach a keeper through one each.
_EXPORT_BUFFER = 256
_RESULTS_BUFFER = 256
# The tee forwards results in small batches: receive_nowait() saves a scheduler round trip each,
# and a result costs the tee 50-100 calls (alerting, history, the observer), so 8 keep a step far
# under a millisecond. (4,096 made one step forward all 2,000 targets' results: 14,700 calls.)
_TEE_BATCH = 8

#: Called with (probe name, result) for every result, as the tee passes it on.
Observer = Callable[[str, ProbeResult], None]
#: The runner's own metrics and the surfacers': read by one exporter every export interval,
#: labelled ``ptype="runner"`` first (one rule for every self-metric).
Collector = Callable[[], Iterable[EventMetrics]]


class StartupError(Exception):
    """A probe or surfacer failed before it was ready (a port in use, a locked queue directory).

    The message names the part and says why; the original exception is the ``__cause__``.
    :meth:`Runner.run` and :func:`run` raise it as itself, not inside an exception group, so
    ``except StartupError`` works around them (docs/errors.md); two parts failing at once still
    come as a group of both.
    """


async def _start(nursery: trio.Nursery, what: str, fn: Callable[..., Any], *args: object) -> Any:
    try:
        return await nursery.start(fn, *args)
    except Exception as exc:
        cause = _root_cause(exc)
        if isinstance(cause, StartupError):  # a part of the part, already named (status page)
            raise cause from cause.__cause__
        raise StartupError(f"{what} could not start: {cause}") from exc


def _root_cause(exc: BaseException) -> BaseException:
    # The error a part raised reaches us wrapped in the groups of the nurseries it crossed.
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _fleet_agent(config: Config) -> FleetAgent | None:
    if config.fleet is None:
        return None
    from .fleet.agent import FleetAgent  # here: a config without [fleet] never loads it

    return FleetAgent(config.fleet)


def targets_for(
    spec: ProbeSpec, config: Config, target_filter: SnapshotFilter | None = None
) -> ProbeTargets:
    """The probe's target set, with its file and list sources read (a start-up check: this
    blocks, so call it before the run or in a thread)."""
    sources = sources_for(spec, config.base_dir, target_checker(spec.type))
    targets = ProbeTargets(spec.name, sources, filter=target_filter)
    try:
        targets.preload()
    except SourceError as exc:
        raise ConfigError(f"probe {spec.name!r}: {exc}") from None
    except OSError as exc:
        where = exc.filename or "targets"
        reason = exc.strerror or exc
        raise ConfigError(
            f"probe {spec.name!r}: cannot read targets file {where}: {reason}"
        ) from None
    return targets


def _make_probe(spec: ProbeSpec, options: Any, targets: ProbeTargets) -> Probe:
    try:
        probe: Probe = probe_types.load(spec.type).make_probe(spec, options, targets)
    except ConfigError:
        raise
    except ValueError as exc:
        # A probe type may find a problem only when it builds its probe (a secret file that
        # cannot be read): the same one-line error as the config's own checks.
        raise ConfigError(f"probe {spec.name!r}: {exc}") from None
    return probe


@attrs.define(eq=False)
class _ProbeUnit:
    """One probe with its targets and keeper: started, stopped and replaced as one."""

    spec: ProbeSpec
    options: Any
    probe: Probe
    targets: ProbeTargets
    keeper: StatsKeeper
    #: Cancelling it stops the probe and its targets' watchers; the keeper then drains.
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)


@attrs.define(eq=False)
class _SurfacerUnit:
    surfacer: Surfacer
    buffer: int
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)


def _one_per_series(found: Iterable[EventMetrics]) -> list[EventMetrics]:
    """The runner's own metrics (``ptype="runner"`` first), one EventMetrics per kind and label
    set. Surfacers keep the latest EventMetrics of a (kind, labels) series, so two collectors'
    metrics under the same labels (the reloads', the loop lag's, the collector's: all just
    ``ptype="runner"``) sent apart would replace each other's, and one would never be seen."""
    merged: dict[tuple[object, ...], EventMetrics] = {}
    for em in found:
        labels = (
            em.labels
            if next(iter(em.labels), None) == "ptype"
            else {"ptype": "runner", **em.labels}
        )
        key = (em.kind, tuple(sorted(labels.items())))
        into = merged.get(key)
        if into is None:
            into = merged[key] = EventMetrics(em.kind, em.timestamp).set_labels(labels)
        for name, value in em.metrics.items():
            into.add_metric(name, value)
    return list(merged.values())


class Runner:
    """Builds every probe and surfacer of ``config`` (errors surface here, before anything runs)
    and runs them in one nursery; :meth:`reload` swaps in a new config while running.

    Args:
        config: a validated config.
        on_result: called as ``on_result(probe_name, result)`` for every result (the CLI's
            live table uses it). ``observe`` is its deprecated spelling.
        extra_surfacers: surfacers added beside the configured ones, each with its own buffer.
        on_loop_lag: called with each event-loop lag sample, in seconds (the live view).
        freeze_gc: govern the garbage collector while the probes run (:mod:`trioprobe._gc`):
            what survives each older-generation collection is frozen, so the collector's full
            passes, the longest event-loop stalls (0.2-0.5 s at 5,000 targets), walk only what
            is new; an hourly full pass (``gc_reclaim_every``) frees any reference cycles that
            were frozen, and is exported. Process-wide and undone when the probes stop: the
            CLI sets it, embedding code decides for itself.
        gc_reclaim_every: seconds between those full passes, with ``freeze_gc``.
        target_filter: applied to every probe's targets before anyone reads them (the fleet's
            ownership seam, see :data:`trioprobe.targets.SnapshotFilter`); after a change of
            what it keeps, call :meth:`refilter_targets`. With a ``[fleet]`` table and no
            filter given, the fleet's ownership filter is used (docs/fleet.md).
        config_path: the file :meth:`request_reload` reads (SIGHUP, ``POST /-/reload``,
            ``[reload] watch = true``); without it only :meth:`reload` with a config works.
        on_reload: called with each reload's :class:`~trioprobe.reload.ReloadOutcome`.
        labels: added to every export, scrape-time reads included (``trioprobe run
            --workers``' ``worker`` label); a fleet agent adds ``agent``.

    While the probes run, the runner also measures its own event-loop lag and exports it as the
    ``event_loop_lag_seconds`` Distribution (see :mod:`trioprobe._looplag`).
    """

    def __init__(
        self,
        config: Config,
        *,
        on_result: Observer | None = None,
        extra_surfacers: Sequence[Surfacer] = (),
        on_loop_lag: Callable[[float], None] | None = None,
        freeze_gc: bool = False,
        gc_reclaim_every: float = DEFAULT_RECLAIM_EVERY,
        target_filter: SnapshotFilter | None = None,
        config_path: str | os.PathLike[str] | None = None,
        on_reload: Callable[[ReloadOutcome], None] | None = None,
        labels: Mapping[str, str] | None = None,
        observe: Observer | None = None,
    ) -> None:
        self.config = config
        #: Added to every export (``trioprobe run --workers``: ``worker``; a fleet: ``agent``).
        self.labels = dict(labels or {})
        #: This process's fleet membership, with a ``[fleet]`` table (docs/fleet.md).
        self.fleet = _fleet_agent(config)
        if self.fleet is not None and target_filter is None:
            target_filter = self.fleet.snapshot_filter
            self.fleet.on_ownership_change(self.refilter_targets)
        self.observe = renamed_keyword("observe", observe, "on_result", on_result)
        self.on_loop_lag = on_loop_lag
        #: The garbage collector's governor, with ``freeze_gc`` (its metrics are the runner's).
        self.gc_governor = GcGovernor(gc_reclaim_every) if freeze_gc else None
        # Every loop-lag sample, exported with the runner's other metrics (_collect_loop_lag).
        self._loop_lag = LAG_BUCKETS.clone()
        self.target_filter = target_filter
        self.config_path = Path(config_path) if config_path is not None else None
        self.on_reload = on_reload
        #: ``config_reloads_total{result}`` and friends (exported with the runner's metrics).
        self.reload_stats = ReloadStats()
        self._units: dict[str, _ProbeUnit] = {}
        for spec, options in config.probes:
            targets = targets_for(spec, config, target_filter)
            self._units[spec.name] = self._unit(spec, options, targets)
        self._configured = [
            _SurfacerUnit(surfacer_types.load(sspec.type).make_surfacer(options), sspec.buffer)
            for sspec, options in config.surfacers
        ]
        self._extra = [_SurfacerUnit(s, DEFAULT_SURFACER_BUFFER) for s in extra_surfacers]
        self.fanout: Fanout | None = None
        #: Health state, notifications, health metrics and the status page (docs/alerting.md).
        self.alerting = AlertingService(config)
        #: Per-target history in SQLite (docs/history.md), with a ``[history]`` table.
        self.history: HistoryService | None = None
        if config.history is not None:
            self.history = HistoryService(config.history, [spec for spec, _ in config.probes])
            self.health.add_listener(self.history.on_transition)
            self.history.listeners.append(self._pass_burn_rates)
            # Results while blocked or in a window outside the SLO count apart (issue 21).
            self.history.set_aside = self.alerting.set_aside
            self.alerting.history = self.history
        if self.fleet is not None:
            self.alerting.fleet = self.fleet.use_alerts(self.alerting)
            from .statuspage.fleet import FleetView  # here: only a fleet agent loads it

            self.alerting.status_wrappers.append(partial(FleetView, self.fleet))
        self._probes_scope = trio.CancelScope()
        self._leaving: trio.Event | None = None
        self._stopping = False
        self._pipeline: trio.Nursery | None = None
        self._surfacer_nursery: trio.Nursery | None = None
        self._export: trio.MemorySendChannel[EventMetrics] | None = None
        self._reload_send, self._reload_receive = trio.open_memory_channel[
            tuple[Config | None, list[ReloadOutcome], trio.Event]
        ](16)

    @property
    def probes(self) -> list[tuple[ProbeSpec, Probe, ProbeTargets]]:
        """Every running probe: (spec, probe, its targets)."""
        return [(u.spec, u.probe, u.targets) for u in self._units.values()]

    @property
    def surfacers(self) -> list[tuple[Surfacer, int]]:
        """Every surfacer with its buffer: the configured ones, then the extra ones."""
        return [(u.surfacer, u.buffer) for u in (*self._configured, *self._extra)]

    @property
    def health(self) -> Health:
        """Every target's health state: ``subscribe()`` to transitions, ``wait_until(...)``."""
        return self.alerting.health

    def _pass_burn_rates(self, summary: Any) -> None:
        self.health.set_burn_rates(
            {key: ts.burn_rates for key, ts in summary.targets.items() if ts.burn_rates}
        )

    def config_errors(self) -> dict[tuple[str, str], str]:
        """Bad entries of re-read target sources, skipped: (probe, target) -> ``"where: why"``."""
        return {
            (spec.name, target): message
            for spec, _, targets in self.probes
            for target, message in targets.bad_targets().items()
        }

    def refilter_targets(self) -> None:
        """Apply :attr:`target_filter` to every probe's targets again (ownership changed)."""
        for unit in self._units.values():
            unit.targets.set_filter(self.target_filter)

    def collectors(self) -> list[Collector]:
        """What the self-metrics exporter reads: each probe's targets, the reloads, and the
        surfacers that export metrics of their own (``SelfMetrics``)."""
        found: list[Collector] = [u.targets.collect for u in self._units.values()]
        found.append(self.reload_stats.collect)
        found += [
            u.surfacer.self_metrics
            for u in (*self._configured, *self._extra)
            if isinstance(u.surfacer, SelfMetrics)
        ]
        if self.fleet is not None:
            found.append(self.fleet.self_metrics)
        if self.gc_governor is not None:
            found.append(self.gc_governor.collect)
        found.append(self._collect_loop_lag)
        return found

    def shutdown(self) -> None:
        """Begin the phased shutdown: stop the probes and let everything after them drain.

        A fleet agent first revokes its lease (so the others take its targets over at once),
        then stops its probes.
        """
        if self._leaving is not None:
            self._leaving.set()
        else:
            self._stop_probes()

    def _stop_probes(self) -> None:
        self._stopping = True
        self._probes_scope.cancel()
        for unit in self._units.values():
            unit.scope.cancel()

    async def _leave_fleet_on_shutdown(self, leaving: trio.Event) -> None:
        assert self.fleet is not None
        await leaving.wait()
        await self.fleet.leave()
        self._stop_probes()

    def _unit(self, spec: ProbeSpec, options: Any, targets: ProbeTargets) -> _ProbeUnit:
        buckets = spec.latency_buckets
        keeper = StatsKeeper(
            probe_type=spec.type,
            probe_name=spec.name,
            targets=targets,
            interval=spec.export_interval,
            extra_labels=spec.labels,
            latency_distribution=(
                buckets.distribution(LATENCY_UNITS[spec.latency_unit]) if buckets else None
            ),
            export_up=True,
            labels_of=targets.labels_of,
        )
        probe = _make_probe(spec, options, targets)
        if isinstance(probe, ScheduledProbe):
            probe.tick_slot = spec.tick_slot
        return _ProbeUnit(spec, options, probe, targets, keeper)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until :meth:`shutdown` has finished draining, or until cancelled."""
        # Descriptors for every target and server, before any is opened (docs/probing.md).
        listed = sum(len(unit.targets()) for unit in self._units.values())
        ensure_fd_limit(fd_needs(listed, servers=len(self.surfacers) + 1))
        export_send, export_receive = trio.open_memory_channel[EventMetrics](_EXPORT_BUFFER)
        if self.fleet is not None:
            self.labels.setdefault("agent", self.fleet.name)
        self.fanout = Fanout([], labels=self.labels)
        async with open_nursery() as surfacer_nursery:
            self._surfacer_nursery = surfacer_nursery
            if self.fleet is not None:
                # First: a refused name or an unreachable etcd stops the start-up here.
                await _start(surfacer_nursery, "fleet", self.fleet.run)
                self._leaving = trio.Event()
                surfacer_nursery.start_soon(self._leave_fleet_on_shutdown, self._leaving)
            for unit in (*self._configured, *self._extra):
                await self._start_surfacer(unit)
            await surfacer_nursery.start(self.fanout.run, export_receive)
            self._export = export_send
            async with open_nursery() as pipeline:
                self._pipeline = pipeline
                probe_targets = [(u.spec, u.targets) for u in self._units.values()]
                await _start(
                    pipeline,
                    "alerting",
                    partial(self.alerting.run, export_send.clone(), probe_targets),
                )
                if self.history is not None:
                    what, history_run = "history", self.history.run
                    await _start(pipeline, what, history_run, export_send.clone())
                await self._run_probes(export_send, task_status)
                # Every probe has stopped and every keeper made its final export.
                export_send.close()
                self.alerting.finish()
                if self.history is not None:
                    self.history.finish()
            surfacer_nursery.cancel_scope.deadline = (
                trio.current_time() + self.config.shutdown_grace
            )

    async def _run_probes(
        self, export: trio.MemorySendChannel[EventMetrics], task_status: trio.TaskStatus[None]
    ) -> None:
        self_export = export.clone()
        started = False
        try:
            with self._probes_scope:
                async with open_nursery() as helpers:
                    if self.gc_governor is not None:
                        await helpers.start(self.gc_governor.run)
                    helpers.start_soon(self._watch_loop_lag)
                    for unit in list(self._units.values()):
                        await self._start_unit(unit)
                    helpers.start_soon(self._export_self_metrics, self_export)
                    helpers.start_soon(self._serve_reloads)
                    if self.config.reload is not None and self.config.reload.watch:
                        helpers.start_soon(self._watch_config_file)
                    task_status.started()
                    started = True
        finally:
            # If the probes never started, nor did these exporters, which close their own.
            self_export.close()
            await self._stop_units(list(self._units.values()))
        if not started:
            # shutdown() came while the probes were starting (a signal at start-up): report
            # readiness anyway, so the caller's start() does not fail, and drain.
            task_status.started()

    async def _start_unit(self, unit: _ProbeUnit) -> None:
        assert self._pipeline is not None
        if self._stopping:
            unit.scope.cancel()
        await self._pipeline.start(self._run_unit, unit)

    async def _run_unit(
        self, unit: _ProbeUnit, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The probe (and its targets' watchers) under the unit's scope, its tee and keeper
        after it: cancelling the scope ends the probe, then the tee, then the keeper's final
        export."""
        assert self._export is not None
        name = unit.spec.name
        send_results, receive_results = trio.open_memory_channel[ProbeResult](_RESULTS_BUFFER)
        to_keeper, keeper_input = trio.open_memory_channel[ProbeResult](_RESULTS_BUFFER)
        started = False
        try:
            async with open_nursery() as nursery:
                await nursery.start(unit.keeper.run, keeper_input, self._export.clone())
                nursery.start_soon(self._tee, name, receive_results, to_keeper)
                try:
                    with unit.scope:
                        async with open_nursery() as probes:
                            await _start(probes, f"targets of probe {name!r}", unit.targets.run)
                            await _start(
                                probes, f"probe {name!r}", _run_probe, unit.probe, send_results
                            )
                            task_status.started()
                            started = True
                finally:
                    send_results.close()  # even if the probe never started: ends the tee
            if not started:
                task_status.started()
        finally:
            unit.done.set()

    async def _tee(
        self,
        name: str,
        results: trio.MemoryReceiveChannel[ProbeResult],
        keeper: trio.MemorySendChannel[ProbeResult],
    ) -> None:
        """Results one way: each to alerting (and ``observe``), then on to the keeper."""
        feed: Callable[[ProbeResult], None] = partial(self.alerting.feed, name)
        if self.history is not None:
            alerting_feed, history_feed = feed, partial(self.history.feed, name)

            def feed_both(result: ProbeResult) -> None:
                alerting_feed(result)
                history_feed(result)

            feed = feed_both
        observe = partial(self.observe, name) if self.observe is not None else None
        async with keeper, results:
            while True:
                try:
                    result = await results.receive()
                except trio.EndOfChannel:
                    return
                for _ in range(_TEE_BATCH):
                    feed(result)
                    if observe is not None:
                        observe(result)
                    await send_result(keeper, result)
                    try:
                        result = results.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break

    async def _stop_units(self, units: Sequence[_ProbeUnit]) -> None:
        for unit in units:
            unit.scope.cancel()
        for unit in units:
            await unit.done.wait()

    async def _start_surfacer(self, unit: _SurfacerUnit) -> None:
        assert self._surfacer_nursery is not None
        assert self.fanout is not None
        send, receive = trio.open_memory_channel[EventMetrics](unit.buffer)
        what = f"surfacer {unit.surfacer.name!r}"
        await _start(self._surfacer_nursery, what, self._run_surfacer, unit, receive)
        self.fanout.add(unit.surfacer.name, send)
        # A surfacer that can read the keepers at scrape time (prometheus) gets fresh counts at
        # every scrape, whatever the stats_interval (docs/metrics.md, "Fresh at every scrape").
        if isinstance(unit.surfacer, LiveMetrics):
            unit.surfacer.attach_live_source(self.live_metrics)
        if self.config_path is not None and isinstance(unit.surfacer, Reloadable):
            unit.surfacer.reload_handler = self.request_reload

    async def _run_surfacer(
        self,
        unit: _SurfacerUnit,
        receive: trio.MemoryReceiveChannel[EventMetrics],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with unit.scope:
                await unit.surfacer.run(receive, task_status=task_status)
        finally:
            unit.done.set()

    async def _stop_surfacer(self, unit: _SurfacerUnit) -> None:
        """Its channel closes: it drains and flushes, within ``shutdown_grace``."""
        assert self.fanout is not None
        self.fanout.remove(unit.surfacer.name)
        unit.scope.deadline = trio.current_time() + self.config.shutdown_grace
        await unit.done.wait()

    async def live_metrics(self) -> list[EventMetrics]:
        """Every keeper's current state, as its next export would send it.

        A scrape-time read from another task: safe because the keepers' state is only ever
        touched from this thread, and a snapshot clones one accumulator at a time.
        """
        now = time.time()
        batch: list[EventMetrics] = []
        for unit in list(self._units.values()):
            batch.extend(await unit.keeper.snapshot(now))
        for em in batch if self.labels else ():
            # The labels the fan-out adds to exports: a scrape-time read is the same series.
            for key, value in self.labels.items():
                em.add_label(key, value)
        return batch

    async def _export_self_metrics(self, export: trio.MemorySendChannel[EventMetrics]) -> None:
        """Every shortest export interval, what the collectors report (the targets' sources,
        reloads, a handoff queue's backlog...), so it can be watched and alerted on like the
        probes' metrics. One labelling rule: ``ptype="runner"`` first."""
        async with export:
            while True:
                interval = min((u.spec.export_interval for u in self._units.values()), default=10.0)
                await trio.sleep(interval)
                for em in _one_per_series(em for collect in self.collectors() for em in collect()):
                    await export.send(em)

    async def _watch_loop_lag(self) -> None:
        def sample(seconds: float) -> None:
            self._loop_lag.add_sample(seconds)
            if self.on_loop_lag is not None:
                self.on_loop_lag(seconds)

        intervals = [u.spec.export_interval for u in self._units.values()]
        # No export of its own: under the runner's labels the lag is one series set with the
        # runner's other metrics, read by _export_self_metrics like them.
        await watch_loop_lag(None, export_interval=min(intervals, default=10.0), on_lag=sample)

    def _collect_loop_lag(self) -> list[EventMetrics]:
        em = EventMetrics(Kind.CUMULATIVE).add_label("ptype", "runner")
        return [em.add_metric(LAG_METRIC, self._loop_lag.clone())]

    # --- live reload (docs/config.md, "Reload") ---------------------------------------------

    async def request_reload(self, config: Config | None = None) -> ReloadOutcome:
        """Reload ``config``, or the config file (:attr:`config_path`) read again, and return
        what happened. Reloads run one at a time in the runner's own task, so the caller
        being cancelled (an HTTP client gone) never leaves one half done."""
        box: list[ReloadOutcome] = []
        done = trio.Event()
        try:
            self._reload_send.send_nowait((config, box, done))
        except trio.WouldBlock:
            return ReloadOutcome(False, "reload refused: too many reloads already waiting")
        await done.wait()
        return box[0]

    async def reload(self, config: Config) -> ReloadOutcome:
        """Apply ``config`` to the running runner (see :mod:`trioprobe.reload`)."""
        return await self.request_reload(config)

    async def _serve_reloads(self) -> None:
        async for config, box, done in self._reload_receive:
            try:
                box.append(await self._reload(config))
            except Exception as exc:  # a bug must not end the run: report it as a failure
                logger.exception("reload failed")
                box.append(self._reloaded(False, f"reload failed: {exc!r}"))
            finally:
                if not box:
                    box.append(ReloadOutcome(False, "reload interrupted by shutdown"))
                done.set()

    def _reloaded(self, ok: bool, message: str) -> ReloadOutcome:
        outcome = ReloadOutcome(ok, message)
        self.reload_stats.record(outcome)
        if ok:
            logger.info("%s", message)
        else:
            logger.error("%s", message)
        if self.on_reload is not None:
            self.on_reload(outcome)
        return outcome

    async def _reload(self, config: Config | None) -> ReloadOutcome:
        where = str(self.config_path) if self.config_path is not None else "config"
        if config is None:
            if self.config_path is None:
                return self._reloaded(False, "reload failed: no config file to read")
            try:
                config = await trio.to_thread.run_sync(load_config, self.config_path)
            except ConfigError as exc:
                return self._reloaded(False, _failed(where, exc))
        plan = plan_reload(self.config, config)
        try:
            built = await self._build(plan, config)
        except ConfigError as exc:
            return self._reloaded(False, _failed(where, exc))
        try:
            await self._apply(plan, config, built)
        except StartupError as exc:
            self.config = config
            return self._reloaded(False, f"reload of {where} partly applied: {exc}")
        self.config = config
        return self._reloaded(True, f"reloaded {where}: {plan.describe(config)}")

    async def _build(self, plan: ReloadPlan, config: Config) -> dict[str, _ProbeUnit]:
        """The new units of changed and added probes, their file sources read in a thread:
        a problem here (a bad targets file, a secret that cannot be read) fails the reload
        before anything running is touched."""
        options = {spec.name: (spec, opts) for spec, opts in config.probes}
        built = {}
        for name in (*plan.changed, *plan.added):
            spec, opts = options[name]
            targets = await trio.to_thread.run_sync(targets_for, spec, config, self.target_filter)
            built[name] = self._unit(spec, opts, targets)
        return built

    async def _apply(self, plan: ReloadPlan, config: Config, built: dict[str, _ProbeUnit]) -> None:
        await self.alerting.update_config(config)
        if self.history is not None:
            # Before the new units start: their first results find their buckets and SLO.
            self.history.set_probes([spec for spec, _ in config.probes])
        for name in plan.removed:
            unit = self._units.pop(name)
            await self._stop_units([unit])
            await self.alerting.unwatch(name, forget=True)
        for name in plan.changed:
            old, new = self._units[name], built[name]
            await self._stop_units([old])
            await self.alerting.unwatch(name, forget=False)
            new.keeper.adopt(old.keeper)
            self._units[name] = new
            await self._start_unit(new)
            self.alerting.watch(new.spec, new.targets)
        for name in plan.added:
            unit = built[name]
            self._units[name] = unit
            await self._start_unit(unit)
            self.alerting.watch(unit.spec, unit.targets)
        await self._apply_surfacers(plan, config)

    async def _apply_surfacers(self, plan: ReloadPlan, config: Config) -> None:
        old = self._configured
        for index in plan.surfacers_removed:
            await self._stop_surfacer(old[index])
        kept = dict((new, old[i]) for i, new in plan.surfacers_kept)
        units = []
        for index, (sspec, options) in enumerate(config.surfacers):
            unit = kept.get(index)
            if unit is None:
                surfacer = surfacer_types.load(sspec.type).make_surfacer(options)
                unit = _SurfacerUnit(surfacer, sspec.buffer)
                await self._start_surfacer(unit)
            units.append(unit)
        self._configured = units

    async def _watch_config_file(self) -> None:
        """``[reload] watch = true``: reload when the config file's stamp changes (a stat per
        second on the loop: metadata only; the read and the checks run in a thread)."""
        if self.config_path is None:
            return
        path = self.config_path
        last = _stamp(path)
        while True:
            await trio.sleep(self.config.reload.interval if self.config.reload else 1.0)
            stamp = _stamp(path)
            if stamp == last:
                continue
            # An editor may still be writing it: wait until it stops changing.
            await trio.sleep(0.1)
            if _stamp(path) != stamp:
                continue
            last = stamp
            await self.request_reload()


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _failed(where: str, exc: ConfigError) -> str:
    # load_config's lines already start with the file's name.
    lines = str(exc).splitlines()
    more = f" (and {len(lines) - 1} more problem(s))" if len(lines) > 1 else ""
    return f"reload failed, still running the previous config: {lines[0]}{more}"


async def _run_probe(
    probe: Probe,
    results: trio.MemorySendChannel[ProbeResult],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    # The probe's channel end closes when the probe stops, which is what ends its tee.
    async with results:
        await probe.run(results, task_status=task_status)


async def run(
    config: Config,
    *,
    on_result: Observer | None = None,
    task_status: trio.TaskStatus[Runner] = trio.TASK_STATUS_IGNORED,
    observe: Observer | None = None,
) -> None:
    """Run ``config`` until cancelled; ``task_status.started(runner)`` once every probe runs.

    A part that cannot start raises :class:`StartupError`, as itself (not in a group).

    Call ``runner.shutdown()`` on the runner it reports for a graceful stop. ``observe`` is
    the deprecated spelling of ``on_result``.
    """
    runner = Runner(config, on_result=renamed_keyword("observe", observe, "on_result", on_result))
    async with open_nursery() as nursery:
        await nursery.start(runner.run)
        task_status.started(runner)
