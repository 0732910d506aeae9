"""The one ticker every scheduler uses: a fixed-rate grid that drops missed ticks.

Probes, the Prober, the stats export, alert evaluation, the log pinger and the loop-lag watch
all fire on a grid of ``interval`` seconds. A task that overran its interval must neither burst
to catch up (a burst of probes measures the prober, not the target) nor drift off its grid (two
probes of one target would creep towards each other). :class:`Ticker` holds that arithmetic
once, as Go's ``time.Ticker`` does: ticks that nobody waited for are counted and dropped.

A probe's per-target tickers can share one :class:`TickGrid` (its ``tick_slot`` key), which
wakes them in batches: see its docstring for why, and what it costs.
"""

from __future__ import annotations

import heapq
import math
import zlib

import attrs
import trio

__all__ = ["Tick", "TickGrid", "Ticker", "spread_offset"]


@attrs.frozen
class Tick:
    """One tick a :class:`Ticker` delivered."""

    #: When the tick was due (``trio.current_time()`` scale).
    at: float
    #: How long after ``at`` it was delivered: time the loop or the caller kept it waiting.
    lateness: float
    #: Ticks of the grid that were dropped since the previous tick was delivered.
    missed: int


class Ticker:
    """An async iterator of :class:`Tick` on the grid ``first_at + k * interval``.

    ``late="skip"`` (the default) waits for the first tick still ahead when the caller comes
    back after the next one was due: a probe that overran its interval skips the ticks it missed
    and stays on its grid. The first tick is the exception: a schedule that starts late (its
    task first ran after ``first_at``, as when thousands of targets are added in one batch) has
    overrun nothing, so that tick is delivered at once with its lateness, not dropped.
    ``late="fire"`` delivers the overdue tick at once and drops the ones
    after it, as Go's ticker does with its one-slot channel (the Prober follows Go).

    A loop that waits for something else until the next tick (``trio.move_on_at(ticker.due)``)
    uses :meth:`poll` instead of iterating. ``missed`` counts every dropped tick.

    With a ``grid``, each tick is delivered at the first point of the grid at or after it is
    due (:meth:`TickGrid.align`), and that point is the tick's ``at``: the grid decides when the
    probe runs, so time spent waiting for it is not lateness. The nominal schedule
    (``first_at + k * interval``) is kept, so the grid never makes a ticker drift.
    """

    def __init__(
        self,
        interval: float,
        *,
        first_at: float | None = None,
        late: str = "skip",
        grid: TickGrid | None = None,
    ):
        if not interval > 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        if late not in ("skip", "fire"):
            raise ValueError(f"late must be 'skip' or 'fire', got {late!r}")
        self.interval = interval
        self._fire_late = late == "fire"
        #: The next tick not yet delivered.
        self.due = trio.current_time() + interval if first_at is None else first_at
        #: Ticks dropped so far.
        self.missed = 0
        self._delivered = False
        self._grid = grid

    def __aiter__(self) -> Ticker:
        return self

    async def __anext__(self) -> Tick:
        now = trio.current_time()
        if now < self._wake_at():
            await self._sleep()
        elif self._fire_late or not self._delivered:
            await trio.lowlevel.checkpoint()
        else:
            skipped = math.floor((now - self.due) / self.interval) + 1
            self.due += skipped * self.interval
            self.missed += skipped
            await self._sleep()
        return self._take(trio.current_time())

    def _wake_at(self) -> float:
        return self.due if self._grid is None else self._grid.align(self.due)

    async def _sleep(self) -> None:
        if self._grid is None:
            await trio.sleep_until(self.due)
        else:
            await self._grid.sleep_until(self.due)

    def poll(self) -> Tick | None:
        """The overdue tick if ``due`` has passed (dropping any after it), else ``None``."""
        now = trio.current_time()
        return self._take(now) if now >= self._wake_at() else None

    def restart(self, delay: float | None = None) -> None:
        """Move the grid so that the next tick is ``delay`` (default: one interval) from now."""
        self.due = trio.current_time() + (self.interval if delay is None else delay)

    def _take(self, now: float) -> Tick:
        self._delivered = True
        at = self._wake_at()
        # Grid points between the one delivered and now were swallowed by the wait: drop them.
        dropped = max(0, math.floor((now - at) / self.interval))
        self.due += (dropped + 1) * self.interval
        self.missed += dropped
        return Tick(at, now - at, dropped)


class TickGrid:
    """One timer for many tickers: every deadline is rounded up to a multiple of ``slot``, and
    the tasks due at one slot are woken together by one task (:meth:`run`).

    Why: on a mostly idle machine, waking the event loop costs far more CPU than the little a
    probe does once awake (100-200 µs per wake-up measured on a 2-core KVM guest, against tens of
    µs of work; ``benchmarks/loop_wakeups.py``). A thousand targets spread over a one-second
    interval each wake the loop alone; on a 10 ms grid they wake it a hundred times, ten at a
    time. And a task parked in a :class:`trio.lowlevel.ParkingLot` is woken by a plain
    reschedule, where each ``trio.sleep_until`` enters a cancel scope and is woken by raising
    ``Cancelled`` into it.

    The cost: up to one ``slot`` of delay before a probe starts, and the probes of one slot start
    together, so each one's latency includes the others' work in this process (~1.5 ms of
    latency p50 at 10 ms and 1,000 probes/s on loopback: docs/probing.md). That is why it is
    opt-in. A crowded slot is woken :data:`WAKE_CHUNK` tasks per scheduler step, so waking
    10,000 of them at once does not hold the event loop.
    """

    def __init__(self, slot: float) -> None:
        if not MIN_SLOT <= slot < math.inf:
            raise ValueError(f"slot must be at least {MIN_SLOT:g}s and finite, got {slot}")
        self.slot = slot
        self._slots: dict[int, trio.lowlevel.ParkingLot] = {}
        self._due: list[int] = []  # heap of the keys of _slots
        self._timer = trio.CancelScope()

    def align(self, deadline: float) -> float:
        """The grid point at which a task sleeping until ``deadline`` wakes."""
        return self._index(deadline) * self.slot

    def _index(self, deadline: float) -> int:
        # The tolerance keeps a deadline that is already a grid point (k * slot, give or take
        # a rounding error) on that point instead of the next one.
        return math.ceil(deadline / self.slot - 1e-6)

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until the grid point at or after ``deadline``; needs :meth:`run` running."""
        index = self._index(deadline)
        sleepers = self._slots.get(index)
        if sleepers is None:
            sleepers = self._slots[index] = trio.lowlevel.ParkingLot()
            heapq.heappush(self._due, index)
            self._timer.deadline = min(self._timer.deadline, index * self.slot)
        await sleepers.park()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wake each slot's sleepers when it comes, until cancelled."""
        task_status.started()
        while True:
            deadline = self._due[0] * self.slot if self._due else math.inf
            with trio.CancelScope(deadline=deadline) as self._timer:
                await trio.sleep_forever()
            await self._wake_due()

    async def _wake_due(self) -> None:
        # Slots fall due together when the loop was held up; the budget spans them.
        budget = WAKE_CHUNK
        while self._due and self._due[0] * self.slot <= trio.current_time():
            sleepers = self._slots[self._due[0]]
            budget -= len(sleepers.unpark(count=budget))
            if not sleepers:
                del self._slots[heapq.heappop(self._due)]
            if budget == 0:
                await trio.lowlevel.checkpoint()
                budget = WAKE_CHUNK


#: The narrowest :class:`TickGrid` slot (seconds). The loop's timer has millisecond steps, so a
#: narrower grid coalesces nothing; and a slot of 5e-324 s overflows the slot arithmetic.
MIN_SLOT = 0.001

#: Tasks a :class:`TickGrid` wakes in one scheduler step (each costs ~10 calls).
WAKE_CHUNK = 50


def spread_offset(key: str, interval: float) -> float:
    """A stable delay in ``(0, interval]`` for ``key``: when its first probe is due.

    Many targets added at once would otherwise all fire on the same tick, and what they report
    as latency would be mostly time spent queued behind the burst. The offset is a hash of the
    target (CRC-32, unlike ``hash()`` the same in every process), as cloudprober spreads its
    targets, so a target keeps its phase across restarts and re-reads of a targets file.
    """
    return interval * (zlib.crc32(key.encode()) + 1) / 2**32
