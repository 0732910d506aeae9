"""The one ticker every scheduler uses: a fixed-rate grid that drops missed ticks.

Probes, the Prober, the stats export, alert evaluation, the log pinger and the loop-lag watch
all fire on a grid of ``interval`` seconds. A task that overran its interval must neither burst
to catch up (a burst of probes measures the prober, not the target) nor drift off its grid (two
probes of one target would creep towards each other). :class:`Ticker` holds that arithmetic
once, as Go's ``time.Ticker`` does: ticks that nobody waited for are counted and dropped.
"""

from __future__ import annotations

import math
import zlib

import attrs
import trio

__all__ = ["Tick", "Ticker", "spread_offset"]


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
    """

    def __init__(self, interval: float, *, first_at: float | None = None, late: str = "skip"):
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

    def __aiter__(self) -> Ticker:
        return self

    async def __anext__(self) -> Tick:
        now = trio.current_time()
        if now < self.due:
            await trio.sleep_until(self.due)
        elif self._fire_late or not self._delivered:
            await trio.lowlevel.checkpoint()
        else:
            skipped = math.floor((now - self.due) / self.interval) + 1
            self.due += skipped * self.interval
            self.missed += skipped
            await trio.sleep_until(self.due)
        return self._take(trio.current_time())

    def poll(self) -> Tick | None:
        """The overdue tick if ``due`` has passed (dropping any after it), else ``None``."""
        now = trio.current_time()
        return self._take(now) if now >= self.due else None

    def restart(self, delay: float | None = None) -> None:
        """Move the grid so that the next tick is ``delay`` (default: one interval) from now."""
        self.due = trio.current_time() + (self.interval if delay is None else delay)

    def _take(self, now: float) -> Tick:
        self._delivered = True
        at = self.due
        # Grid points between the one delivered and now were swallowed by the wait: drop them.
        dropped = max(0, math.floor((now - at) / self.interval))
        self.due = at + (dropped + 1) * self.interval
        self.missed += dropped
        return Tick(at, now - at, dropped)


def spread_offset(key: str, interval: float) -> float:
    """A stable delay in ``(0, interval]`` for ``key``: when its first probe is due.

    Many targets added at once would otherwise all fire on the same tick, and what they report
    as latency would be mostly time spent queued behind the burst. The offset is a hash of the
    target (CRC-32, unlike ``hash()`` the same in every process), as cloudprober spreads its
    targets, so a target keeps its phase across restarts and re-reads of a targets file.
    """
    return interval * (zlib.crc32(key.encode()) + 1) / 2**32
