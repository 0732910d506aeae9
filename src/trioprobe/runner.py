"""The runner: one nursery holding probes -> stats keepers -> fan-out -> surfacers.

Shutdown is cancellation in phases, each ending the next one's input::

    shutdown()  -> the probes' cancel scope is cancelled; each probe's results channel closes
                -> each keeper sees EndOfChannel, makes its final export, closes its export clone
                -> the fan-out sees EndOfChannel once every keeper is done, closes surfacer channels
                -> surfacers drain and flush, under a deadline of ``shutdown_grace`` seconds

so the last results a probe produced still reach every surfacer. Cancelling the task that runs
:meth:`Runner.run` instead stops everything at once, with no final export.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ._fdlimit import ensure_fd_limit, fd_needs
from ._groups import open_nursery
from ._looplag import watch_loop_lag
from .alerting import AlertingService, Health
from .config import (
    DEFAULT_SURFACER_BUFFER,
    Config,
    ConfigError,
    ProbeSpec,
    target_checker,
)
from .metrics import EventMetrics
from .probes import Probe, probe_types
from .results import LATENCY_UNITS, ProbeResult
from .stats import StatsKeeper
from .surfacers import Fanout, Surfacer, surfacer_types
from .targets import ProbeTargets, SnapshotFilter, SourceError, sources_for

if TYPE_CHECKING:
    from .fleet.agent import FleetAgent

__all__ = ["Runner", "StartupError", "run"]

# Keepers hand exports to the fan-out through this; results reach a keeper through one each.
_EXPORT_BUFFER = 256
_RESULTS_BUFFER = 256

#: Called with (probe name, result) for every result, as the keeper folds it in.
Observer = Callable[[str, ProbeResult], None]


class StartupError(Exception):
    """A probe or surfacer failed before it was ready (a port in use, a locked queue directory).

    The message names the part and says why; the original exception is the ``__cause__``.
    :meth:`Runner.run` and :func:`run` raise it as itself, not inside an exception group, so
    ``except StartupError`` works around them (docs/errors.md); two parts failing at once still
    come as a group of both.
    """


async def _start(nursery: trio.Nursery, what: str, fn: Callable[..., Any], *args: object) -> None:
    try:
        await nursery.start(fn, *args)
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


class Runner:
    """Builds every probe and surfacer of ``config`` (errors surface here, before anything runs)
    and runs them in one nursery.

    Args:
        config: a validated config.
        observe: called for every result (the CLI's live table uses it).
        extra_surfacers: surfacers added beside the configured ones, each with its own buffer.
        on_loop_lag: called with each event-loop lag sample, in seconds (the live view).
        freeze_gc: ``gc.collect(); gc.freeze()`` before the probes start and again once every
            target has been probed (the longest interval after start): what start-up made
            (modules, config, clients, connections) then stays out of the collector's full
            passes, the longest event-loop stalls. With 1,000 targets that cut the longest task
            step of the first round from 42-45 to 25 ms of CPU, and the full passes after it
            from 77-130 to 32-74 ms. It costs two full collections: one before probing starts,
            one pause (like the collector's own) after the first round. It is process-wide, and
            undone when the probes stop: the CLI sets it, embedding code decides for itself.
        target_filter: applied to every probe's targets before anyone reads them (the fleet's
            ownership seam, see :data:`trioprobe.targets.SnapshotFilter`); after a change of
            what it keeps, call :meth:`refilter_targets`. With a ``[fleet]`` table and no
            filter given, the fleet's ownership filter is used (docs/fleet.md).

    While the probes run, the runner also measures its own event-loop lag and exports it as the
    ``event_loop_lag_seconds`` Distribution (see :mod:`trioprobe._looplag`).
    """

    def __init__(
        self,
        config: Config,
        *,
        observe: Observer | None = None,
        extra_surfacers: Sequence[Surfacer] = (),
        on_loop_lag: Callable[[float], None] | None = None,
        freeze_gc: bool = False,
        target_filter: SnapshotFilter | None = None,
    ) -> None:
        self.config = config
        #: This process's fleet membership, with a ``[fleet]`` table (docs/fleet.md).
        self.fleet = _fleet_agent(config)
        if self.fleet is not None and target_filter is None:
            target_filter = self.fleet.snapshot_filter
            self.fleet.on_ownership_change(self.refilter_targets)
        self.target_filter = target_filter
        self.observe = observe
        self.on_loop_lag = on_loop_lag
        self.freeze_gc = freeze_gc
        self.probes: list[tuple[ProbeSpec, Probe, ProbeTargets]] = []
        for spec, options in config.probes:
            targets = targets_for(spec, config, target_filter)
            try:
                probe = probe_types.load(spec.type).make_probe(spec, options, targets)
            except ConfigError:
                raise
            except ValueError as exc:
                # A probe type may find a problem only when it builds its probe (a secret file
                # that cannot be read): the same one-line error as the config's own checks.
                raise ConfigError(f"probe {spec.name!r}: {exc}") from None
            self.probes.append((spec, probe, targets))
        self.surfacers: list[tuple[Surfacer, int]] = [
            (surfacer_types.load(sspec.type).make_surfacer(options), sspec.buffer)
            for sspec, options in config.surfacers
        ]
        self.surfacers.extend((surfacer, DEFAULT_SURFACER_BUFFER) for surfacer in extra_surfacers)
        # A surfacer that can read the keepers at scrape time (prometheus) gets fresh counts at
        # every scrape, whatever the stats_interval (docs/metrics.md, "Fresh at every scrape").
        self._keepers: list[StatsKeeper] = []
        for surfacer, _ in self.surfacers:
            attach = getattr(surfacer, "attach_live_source", None)
            if attach is not None:
                attach(self.live_metrics)
        self.fanout: Fanout | None = None
        #: Health state, notifications, health metrics and the status page (docs/alerting.md).
        self.alerting = AlertingService(config)
        if self.fleet is not None:
            fleet_alerts = self.fleet.use_alerts(self.alerting.rule_of, self.alerting.send)
            self.alerting.vote = fleet_alerts.local
        self._probes_scope = trio.CancelScope()
        self._leaving: trio.Event | None = None

    @property
    def health(self) -> Health:
        """Every target's health state: ``subscribe()`` to transitions, ``wait_until(...)``."""
        return self.alerting.health

    def config_errors(self) -> dict[tuple[str, str], str]:
        """Bad entries of re-read target sources, skipped: (probe, target) -> ``"where: why"``."""
        return {
            (spec.name, target): message
            for spec, _, targets in self.probes
            for target, message in targets.bad_targets().items()
        }

    def refilter_targets(self) -> None:
        """Apply :attr:`target_filter` to every probe's targets again (ownership changed)."""
        for _, _, targets in self.probes:
            targets.refilter()

    def shutdown(self) -> None:
        """Begin the phased shutdown: stop the probes and let everything after them drain.

        A fleet agent first revokes its lease (so the others take its targets over at once),
        then stops its probes.
        """
        if self._leaving is not None:
            self._leaving.set()
        else:
            self._probes_scope.cancel()

    async def _leave_fleet_on_shutdown(self, leaving: trio.Event) -> None:
        assert self.fleet is not None
        await leaving.wait()
        await self.fleet.leave()
        self._probes_scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until :meth:`shutdown` has finished draining, or until cancelled."""
        # Descriptors for every target and server, before any is opened (docs/probing.md).
        listed = sum(len(list(listing())) for _, _, listing in self.probes)
        ensure_fd_limit(fd_needs(listed, servers=len(self.surfacers) + 1))
        export_send, export_receive = trio.open_memory_channel[EventMetrics](_EXPORT_BUFFER)
        sinks: list[tuple[str, trio.MemorySendChannel[EventMetrics]]] = []
        async with open_nursery() as surfacer_nursery:
            if self.fleet is not None:
                # First: a refused name or an unreachable etcd stops the start-up here.
                await _start(surfacer_nursery, "fleet", self.fleet.run)
                self._leaving = trio.Event()
                surfacer_nursery.start_soon(self._leave_fleet_on_shutdown, self._leaving)
            for surfacer, buffer in self.surfacers:
                send, receive = trio.open_memory_channel[EventMetrics](buffer)
                sinks.append((surfacer.name, send))
                await _start(surfacer_nursery, f"surfacer {surfacer.name!r}", surfacer.run, receive)
            labels = {"agent": self.fleet.name} if self.fleet is not None else {}
            self.fanout = Fanout(sinks, labels=labels)
            await surfacer_nursery.start(self.fanout.run, export_receive)

            async with open_nursery() as keeper_nursery:
                inputs: list[trio.MemorySendChannel[ProbeResult]] = []
                self_export = export_send.clone()
                async with export_send:
                    probe_targets = [(spec, targets) for spec, _, targets in self.probes]
                    await _start(
                        keeper_nursery,
                        "alerting",
                        partial(self.alerting.run, export_send.clone(), probe_targets),
                    )
                    lag_export = export_send.clone()
                    for spec, _, targets in self.probes:
                        send_results, receive_results = trio.open_memory_channel[ProbeResult](
                            _RESULTS_BUFFER
                        )
                        inputs.append(send_results)
                        await keeper_nursery.start(
                            self._keeper(spec, targets, receive_results, export_send.clone())
                        )
                started = False
                with self._probes_scope:
                    async with open_nursery() as probe_nursery:
                        if self.freeze_gc:
                            await probe_nursery.start(self._freeze_gc_after_start)
                        probe_nursery.start_soon(self._watch_loop_lag, lag_export)
                        for spec, _, targets in self.probes:
                            what = f"targets of probe {spec.name!r}"
                            await _start(probe_nursery, what, targets.run)
                        for (spec, probe, _), send_results in zip(self.probes, inputs, strict=True):
                            what = f"probe {spec.name!r}"
                            await _start(probe_nursery, what, _run_probe, probe, send_results)
                        probe_nursery.start_soon(self._export_self_metrics, self_export)
                        task_status.started()
                        started = True
                # If the probes never started, nor did these exporters, which close their own.
                self_export.close()
                lag_export.close()
                if not started:
                    # shutdown() came while the probes were starting (a signal at start-up):
                    # report readiness anyway, so the caller's start() does not fail, and drain.
                    task_status.started()
                # Every input channel is closed now, even if a probe failed to start.
                for send_results in inputs:
                    send_results.close()
                self.alerting.finish()
            surfacer_nursery.cancel_scope.deadline = (
                trio.current_time() + self.config.shutdown_grace
            )

    async def live_metrics(self) -> list[EventMetrics]:
        """Every keeper's current state, as its next export would send it.

        A scrape-time read from another task: safe because the keepers' state is only ever
        touched from this thread, and a snapshot clones one accumulator at a time.
        """
        now = time.time()
        batch: list[EventMetrics] = []
        for keeper in self._keepers:
            batch.extend(await keeper.snapshot(now))
        return batch

    async def _export_self_metrics(self, export: trio.MemorySendChannel[EventMetrics]) -> None:
        """Every shortest export interval, the surfacers' own metrics (a handoff queue's
        backlog, say), so they can be watched and alerted on like the probes'."""
        sources = [s.self_metrics for s, _ in self.surfacers if hasattr(s, "self_metrics")]
        sources += [targets.collect for _, _, targets in self.probes]
        if self.fleet is not None:
            sources.append(self.fleet.self_metrics)
        interval = min((spec.export_interval for spec, _, _ in self.probes), default=10.0)
        async with export:
            while sources:
                await trio.sleep(interval)
                for collect in sources:
                    for em in collect():
                        await export.send(em)

    async def _freeze_gc_after_start(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            # Once now (imports, config: before any probe runs, so in no probe's deadline)...
            gc.collect()
            gc.freeze()
            task_status.started()
            # ...and once every target had its first probe (within one interval: spread offsets).
            await trio.sleep(max((spec.interval for spec, _, _ in self.probes), default=0.0) + 1.0)
            gc.collect()
            gc.freeze()
            await trio.sleep_forever()
        finally:
            # Only for the run: a process that goes on (tests, embedding code) gets its heap back.
            gc.unfreeze()

    async def _watch_loop_lag(self, export: trio.MemorySendChannel[EventMetrics]) -> None:
        def emit(em: EventMetrics) -> None:
            # Never wait on the fan-out here: a lag sample must not itself be delayed. Skipping an
            # export when the fan-out is full loses nothing: the Distribution is cumulative, so
            # the next export carries every sample this one would have.
            with contextlib.suppress(trio.WouldBlock):
                export.send_nowait(em)

        intervals = [spec.export_interval for spec, _, _ in self.probes]
        async with export:  # stops with the probes, so the fan-out still sees its inputs end
            await watch_loop_lag(
                emit, export_interval=min(intervals, default=10.0), on_lag=self.on_loop_lag
            )

    def _keeper(
        self,
        spec: ProbeSpec,
        targets: ProbeTargets,
        results: trio.MemoryReceiveChannel[ProbeResult],
        export: trio.MemorySendChannel[EventMetrics],
    ) -> Callable[..., Any]:
        # The alerting tap: the keeper is the one task that sees this probe's every result.
        feed = partial(self.alerting.feed, spec.name)
        observe: Callable[[ProbeResult], None] = feed
        if self.observe is not None:
            user_observe = partial(self.observe, spec.name)

            def observe_both(result: ProbeResult) -> None:
                feed(result)
                user_observe(result)

            observe = observe_both
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
            observe=observe,
            export_up=True,
            labels_of=targets.labels_of,
        )
        self._keepers.append(keeper)
        return partial(keeper.run, results, export)


async def _run_probe(
    probe: Probe,
    results: trio.MemorySendChannel[ProbeResult],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    # The probe's channel end closes when the probe stops, which is what ends its keeper.
    async with results:
        await probe.run(results, task_status=task_status)


async def run(
    config: Config,
    *,
    observe: Observer | None = None,
    task_status: trio.TaskStatus[Runner] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``config`` until cancelled; ``task_status.started(runner)`` once every probe runs.

    A part that cannot start raises :class:`StartupError`, as itself (not in a group).

    Call ``runner.shutdown()`` on the runner it reports for a graceful stop.
    """
    runner = Runner(config, observe=observe)
    async with open_nursery() as nursery:
        await nursery.start(runner.run)
        task_status.started(runner)
