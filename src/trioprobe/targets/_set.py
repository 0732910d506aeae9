"""A probe's target set: its sources' watcher tasks, merged into one published snapshot."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

import trio

from .._groups import open_nursery
from .._ratelog import RateLimitedLog
from ..metrics import EventMetrics, Int, Kind
from ._model import Snapshot, Target
from ._parse import SourceError
from ._source import Source

__all__ = ["ProbeTargets", "SnapshotFilter", "SourceState"]

logger = logging.getLogger("trioprobe.targets")

#: The fleet's seam: given the probe's name and its merged targets, the targets this process
#: keeps (its share). Called on the Trio thread for each new merged list and on
#: :meth:`ProbeTargets.refilter`: it must be cheap (a hash per target, not I/O).
SnapshotFilter = Callable[[str, tuple[Target, ...]], Iterable[Target]]

#: At most one "source failed" line per probe and source in this many seconds.
LOG_EVERY = 10.0


class SourceState:
    """One source's last good targets and its failures (what the status page shows)."""

    def __init__(self, owner: ProbeTargets, source: Source) -> None:
        self._owner = owner
        self.source = source
        self.targets: tuple[Target, ...] | None = None
        #: Entries skipped as bad in the last good read: address -> ``"where: why"``.
        self.bad: dict[str, str] = {}
        #: Failed attempts since start (``targets_source_errors_total``).
        self.errors_total = 0
        #: The last failure, ``None`` once a read succeeds again.
        self.error: str | None = None

    @property
    def current(self) -> tuple[Target, ...] | None:
        return self.targets

    def publish(self, targets: tuple[Target, ...], bad: Mapping[str, str] | None = None) -> None:
        bad = dict(bad or {})
        for address, message in bad.items():
            if address not in self.bad:
                logger.warning("%s (skipped)", message)
        self.bad = bad
        self.error = None
        if targets != self.targets:
            self.targets = targets
            self._owner._merge()

    def fail(self, message: str) -> None:
        self.errors_total += 1
        self.error = message
        kept = len(self.targets or ())
        self._owner._log.warning(
            f"{self._owner.probe}/{self.source.kind}",
            "probe %r: targets source %s failed (keeping its %d targets): %s",
            self._owner.probe,
            self.source.kind,
            kept,
            message,
        )


class ProbeTargets:
    """The targets of one probe, as one immutable :class:`Snapshot` every reader shares.

    The probe's scheduler, its stats keeper and alerting all call it (``targets()`` returns the
    current snapshot's addresses: no I/O, no parsing) or read :attr:`snapshot`. :meth:`run` is
    the task holding one watcher per source; each publishes into its own slot, and the slots
    are merged in source order (an address from two sources keeps the first one's labels), then
    passed through the filter (the fleet's ownership seam), then published with a new
    ``generation``. A failing source keeps its last good list: only a successful read changes
    what it contributes.
    """

    def __init__(
        self,
        probe: str,
        sources: Sequence[Source],
        *,
        filter: SnapshotFilter | None = None,
    ) -> None:
        self.probe = probe
        self.states = [SourceState(self, source) for source in sources]
        self._filter = filter
        self._merged: tuple[Target, ...] = ()
        #: Addresses the latest :meth:`refilter` added (taken over), with the Trio time.
        self.taken_over: dict[str, float] = {}
        #: The published targets; replaced whole, never changed in place.
        self.snapshot = Snapshot()
        self._changed = trio.Event()
        self._log = RateLimitedLog(logger, LOG_EVERY)

    def __call__(self) -> tuple[str, ...]:
        return self.snapshot.addresses

    def labels_of(self, address: str) -> dict[str, str]:
        """The exported discovery labels of ``address`` in the current snapshot."""
        return self.snapshot.labels_of(address)

    @property
    def sources(self) -> list[Source]:
        return [state.source for state in self.states]

    def preload(self) -> None:
        """Read every source that can be read at once (files, lists), blocking, raising
        ``OSError`` or :class:`SourceError` (naming every bad entry) for what is wrong: the
        start-up check. Network sources are first read by :meth:`run`."""
        for state in self.states:
            loaded = state.source.preload()
            if loaded is None:
                continue
            targets, bad = loaded
            if bad:
                raise SourceError("\n".join(bad.values()))
            state.targets = targets
        self._merge()

    def bad_targets(self) -> dict[str, str]:
        """Entries every source skipped as bad: address -> ``"where: why"``."""
        return {a: m for state in self.states for a, m in state.bad.items()}

    def set_filter(self, filter: SnapshotFilter | None) -> None:
        """Install (or remove) the filter and publish what it keeps now."""
        self._filter = filter
        self.refilter()

    def refilter(self) -> None:
        """Apply the filter again (the fleet calls it when ownership changes).

        What this adds was just taken over from another agent: :attr:`taken_over` notes it, so
        the scheduler probes it at once rather than at its spread offset up to an interval away.
        """
        before = self.snapshot
        self._publish(self._merged)
        # An empty view before is an agent's start (its first member list): spread as usual.
        if self.snapshot is not before and before.addresses:
            try:
                now = trio.current_time()
            except RuntimeError:
                return  # outside a run (a test, a tool): no scheduler to hurry
            old = set(before.addresses)
            self.taken_over = {a: now for a in self.snapshot.addresses if a not in old}

    async def wait_changed(self, generation: int) -> Snapshot:
        """The snapshot, once its generation is past ``generation``."""
        while self.snapshot.generation <= generation:
            await self._changed.wait()
        return self.snapshot

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Every source's watcher, until cancelled; started once each made its first read."""
        async with open_nursery() as nursery:
            for state in self.states:
                await nursery.start(state.source.watch, state)
            task_status.started()

    def collect(self) -> list[EventMetrics]:
        """``targets_source_errors`` per source (a counter), and ``probe_targets`` (a gauge),
        labelled as the runner's own metrics are (``ptype="runner"`` first)."""
        out = []
        for state in self.states:
            em = EventMetrics(Kind.CUMULATIVE).add_label("ptype", "runner")
            em.add_label("probe", self.probe).add_label("source", state.source.kind)
            out.append(em.add_metric("targets_source_errors", Int(state.errors_total)))
        gauge = EventMetrics(Kind.GAUGE).add_label("ptype", "runner")
        gauge.add_label("probe", self.probe).add_metric("probe_targets", Int(len(self.snapshot)))
        out.append(gauge)
        return out

    def _merge(self) -> None:
        merged: dict[str, Target] = {}
        for state in self.states:
            for target in state.targets or ():
                merged.setdefault(target.address, target)
        self._merged = tuple(merged.values())
        self._publish(self._merged)

    def _publish(self, merged: tuple[Target, ...]) -> None:
        kept = merged if self._filter is None else tuple(self._filter(self.probe, merged))
        if kept == self.snapshot.targets:
            return
        self.snapshot = Snapshot(kept, self.snapshot.generation + 1)
        self._changed.set()
        self._changed = trio.Event()
