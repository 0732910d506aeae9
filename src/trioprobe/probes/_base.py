"""What most probe types share: one task per target on a fixed schedule, and a fast result send."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import trio

from .._groups import open_nursery
from .._ticks import Ticker, TickGrid, spread_offset
from ..failures import deadline_failure, track_phases
from ..results import ProbeResult
from ..targets import ProbeTargets
from . import TargetsFn

__all__ = [
    "ClientPerTargetProbe",
    "PerTargetClients",
    "ScheduledProbe",
    "follow_targets",
    "run_per_target",
    "send_result",
]


async def send_result(results: trio.MemorySendChannel[ProbeResult], result: ProbeResult) -> None:
    """Send without a checkpoint when the buffer has room; wait (back-pressure) only when full.

    ``await send()`` always yields to the scheduler, which caps a channel near 100k items/s;
    ``send_nowait`` does not. Falling back to ``await send()`` keeps the back-pressure.
    """
    try:
        results.send_nowait(result)
    except trio.WouldBlock:
        await results.send(result)


async def run_per_target(
    targets: TargetsFn,
    *,
    interval: float,
    probe_timeout: float,
    probe_once: Callable[[str], Awaitable[ProbeResult]],
    results: trio.MemorySendChannel[ProbeResult],
    on_target_removed: Callable[[str], Awaitable[None]] | None = None,
    prepare: Callable[[str], object] | None = None,
    tick_slot: float = 0.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Probe every target once per ``interval``, each in its own task, until cancelled.

    A target's first probe comes after its :func:`~trioprobe._ticks.spread_offset` (a stable
    delay in ``(0, interval]``), so targets added together do not all fire on one tick; one a
    fleet agent just took over (:attr:`ProbeTargets.taken_over`) within a fifth of that.
    ``targets()`` is read again every interval: new targets get a task, removed targets have
    theirs cancelled. Each ``probe_once`` runs under a ``probe_timeout`` cancel scope; running out
    becomes a failed result with ``timeout=True``, so deadlines are deterministic under a
    MockClock. Every result carries ``start_lateness``: how long after its tick the probe began.
    With a ``tick_slot`` (seconds, > 0), ticks are coalesced onto a grid of that width (one
    :class:`~trioprobe._ticks.TickGrid` shared by the targets): the targets due in one slot cost
    one wake-up of the event loop, and start together (docs/probing.md, "Coalesced ticks").

    ``prepare(target)``, if given, runs once in the target's task at its first tick, before the
    deadline starts: that is where a probe builds the target's client, so the build is neither
    counted in a probe's latency nor done for all targets in one scheduler batch.
    ``on_target_removed(target)``, if given, releases what a removed target held (a client).
    """

    watched = targets if isinstance(targets, ProbeTargets) else None
    grid = TickGrid(min(tick_slot, interval)) if tick_slot > 0 else None

    async def probe_target(target: str) -> None:
        first_at = trio.current_time() + _first_probe_after(watched, target, interval)
        ticker = Ticker(interval, first_at=first_at, grid=grid)
        first = True
        async for tick in ticker:
            if first and prepare is not None:
                prepare(target)
            first = False
            started = trio.current_time()
            lateness = started - tick.at
            result: ProbeResult | None = None
            with track_phases() as tracker, trio.move_on_after(probe_timeout):
                result = await probe_once(target)
            if result is None:
                result = ProbeResult(
                    target,
                    False,
                    trio.current_time() - started,
                    timeout=True,
                    error=f"timed out after {probe_timeout:g}s",
                    failure=deadline_failure(tracker),
                    start_lateness=lateness,
                )
            else:
                # The result is still this task's alone, so it is stamped in place: attrs.evolve
                # would rebuild it (converters, validators: ~20 calls) on every probe.
                object.__setattr__(result, "start_lateness", lateness)
            await send_result(results, result)

    running: dict[str, trio.CancelScope] = {}

    async def supervise_target(target: str, scope: trio.CancelScope) -> None:
        with scope:
            await probe_target(target)

    async with open_nursery() as nursery:
        if grid is not None:
            nursery.start_soon(grid.run)

        def start(new: list[str]) -> None:
            for target in new:
                running[target] = trio.CancelScope()
                nursery.start_soon(supervise_target, target, running[target])

        async def stop(target: str) -> None:
            running.pop(target).cancel()
            if on_target_removed is not None:
                await on_target_removed(target)

        await follow_targets(targets, interval, start, stop, task_status=task_status)


#: A target taken over from another fleet agent is first probed within this share of its
#: interval (spread, so a dead agent's targets do not all fire on one tick), not up to a whole
#: interval later: takeover is then within ``lease_ttl`` + one interval (docs/fleet.md).
_TAKEOVER_SHARE = 0.2


def _first_probe_after(watched: ProbeTargets | None, target: str, interval: float) -> float:
    since = watched.taken_over.get(target) if watched is not None else None
    if since is not None and trio.current_time() - since < interval:
        return spread_offset(target, interval * _TAKEOVER_SHARE)
    return spread_offset(target, interval)


async def follow_targets(
    targets: TargetsFn,
    interval: float,
    on_added: Callable[[list[str]], None],
    on_removed: Callable[[str], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Read ``targets()`` now and then every ``interval``, until cancelled, reporting changes.

    ``on_added`` gets the targets that appeared, in chunks of at most 100 with a checkpoint
    between chunks: starting a task costs ~5 µs, so 1,000 targets added in one step would hold
    the event loop for several milliseconds. ``on_removed`` is awaited for each target that went
    away. Duplicates count once. ``task_status.started()`` comes after the first targets were
    added. A :class:`~trioprobe.targets.ProbeTargets` is not polled: its changes are awaited,
    so a new target starts as soon as its source reports it.
    """
    current: dict[str, None] = {}
    started = False
    watched = targets if isinstance(targets, ProbeTargets) else None
    while True:
        generation = watched.snapshot.generation if watched is not None else 0
        wanted = dict.fromkeys(targets())
        for target in [t for t in current if t not in wanted]:
            del current[target]
            await on_removed(target)
        new = [t for t in wanted if t not in current]
        current.update(dict.fromkeys(new))
        for chunk in range(0, len(new), _ADD_CHUNK):
            if chunk:
                await trio.lowlevel.checkpoint()
            on_added(new[chunk : chunk + _ADD_CHUNK])
        if not started:
            task_status.started()
            started = True
        if watched is not None:
            await watched.wait_changed(generation)
        else:
            await trio.sleep(interval)


_ADD_CHUNK = 100

ClientT = TypeVar("ClientT")

# Closing clients at shutdown runs shielded; this bounds how long a stuck close can hold it up.
_CLOSE_TIMEOUT = 1.0


class PerTargetClients(Generic[ClientT]):
    """One client per target: made on first use, closed when the target goes or the probe stops.

    Probes keep a client per target rather than per probe (building one can cost milliseconds)
    or one shared by all (httpx's pool slows down sharply when many tasks share a client). Pass
    :meth:`discard` as ``run_per_target``'s ``on_target_removed`` and ``await aclose()`` in a
    ``finally``.
    """

    def __init__(
        self, make: Callable[[str], ClientT], close: Callable[[ClientT], Awaitable[None]]
    ) -> None:
        self._make = make
        self._close = close
        self._clients: dict[str, ClientT] = {}

    def get(self, target: str) -> ClientT:
        client = self._clients.get(target)
        if client is None:
            client = self._clients[target] = self._make(target)
        return client

    async def discard(self, target: str) -> None:
        client = self._clients.pop(target, None)
        if client is not None:
            await self._close(client)

    async def aclose(self) -> None:
        """Close every client, even when the caller is being cancelled."""
        clients, self._clients = list(self._clients.values()), {}
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
            for client in clients:
                await self._close(client)


OptionsT = TypeVar("OptionsT")


class ScheduledProbe(Generic[OptionsT]):
    """The one base of probe types that probe each target on the shared schedule.

    A subclass defines ``probe_once``, which returns a new result on every call (the scheduler
    stamps it with its ``start_lateness``); ``run`` calls it for every target once per interval
    (see :func:`run_per_target`). What a type keeps per target goes through three hooks, all no-ops
    here: ``prepare`` (at a target's first tick, outside the deadline), ``forget`` (when the
    target goes) and ``release`` (when the probe stops). Types that keep their own deadline set
    ``backstop`` to :data:`~trioprobe.probes._net.BACKSTOP`, so the scheduler's cancel scope
    only ends probes that overrun it.
    """

    backstop: float = 0.0
    #: Seconds: coalesce the targets' ticks onto a grid this wide (0: a timer per target). The
    #: runner sets it from the probe's ``tick_slot`` key.
    tick_slot: float = 0.0
    options: OptionsT
    targets: TargetsFn
    interval: float
    timeout: float

    def __init__(
        self, options: OptionsT, targets: TargetsFn, *, interval: float, timeout: float
    ) -> None:
        self.options = options
        self.targets = targets
        self.interval = interval
        self.timeout = timeout

    async def probe_once(self, target: str) -> ProbeResult:
        raise NotImplementedError

    def prepare(self, target: str) -> None:
        """Build what ``target`` will need (a client) at its first tick, before its deadline."""

    async def forget(self, target: str) -> None:
        """Drop what was kept for ``target`` (a resolved address, say) when it goes away."""

    async def release(self) -> None:
        """Release what is kept for every target; runs when ``run`` ends, even cancelled."""

    async def run(
        self,
        results: trio.MemorySendChannel[ProbeResult],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await run_per_target(
                self.targets,
                interval=self.interval,
                probe_timeout=self.timeout + self.backstop,
                probe_once=self.probe_once,
                results=results,
                on_target_removed=self.forget,
                prepare=self.prepare,
                tick_slot=self.tick_slot,
                task_status=task_status,
            )
        finally:
            await self.release()


class ClientPerTargetProbe(ScheduledProbe[Any], Generic[ClientT]):
    """A :class:`ScheduledProbe` that probes each target with its own client.

    A subclass sets ``targets``, ``interval``, ``timeout`` and ``_clients`` (it need not call
    ``ScheduledProbe.__init__``) and defines ``probe_once``; a target's client is closed when
    the target goes, and all of them when the probe stops.
    """

    _clients: PerTargetClients[ClientT]

    def prepare(self, target: str) -> None:
        # Building the client ahead of the first probe keeps its cost out of the deadline; when
        # it cannot be built (no file descriptor left), probe_once tries again and reports it.
        with contextlib.suppress(OSError):
            self._clients.get(target)

    async def forget(self, target: str) -> None:
        await self._clients.discard(target)

    async def release(self) -> None:
        await self._clients.aclose()
