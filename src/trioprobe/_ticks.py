"""Fixed-rate schedules that drop missed ticks, as Go's ``time.Ticker`` does."""

from __future__ import annotations

import math

__all__ = ["next_tick_after"]


def next_tick_after(tick: float, interval: float, now: float) -> float:
    """The first tick on ``tick``'s grid that is later than ``now`` (at least ``tick + interval``).

    A task that overran its interval skips the ticks it missed instead of bursting to catch up,
    and stays on its original grid.
    """
    missed = max(0, math.floor((now - tick) / interval))
    return tick + (missed + 1) * interval
