"""Fixed-rate schedules that drop missed ticks, as Go's ``time.Ticker`` does."""

from __future__ import annotations

import math
import zlib

__all__ = ["next_tick_after", "spread_offset"]


def next_tick_after(tick: float, interval: float, now: float) -> float:
    """The first tick on ``tick``'s grid that is later than ``now`` (at least ``tick + interval``).

    A task that overran its interval skips the ticks it missed instead of bursting to catch up,
    and stays on its original grid.
    """
    missed = max(0, math.floor((now - tick) / interval))
    return tick + (missed + 1) * interval


def spread_offset(key: str, interval: float) -> float:
    """A stable delay in ``(0, interval]`` for ``key``: when its first probe is due.

    Many targets added at once would otherwise all fire on the same tick, and what they report
    as latency would be mostly time spent queued behind the burst. The offset is a hash of the
    target (CRC-32, unlike ``hash()`` the same in every process), as cloudprober spreads its
    targets, so a target keeps its phase across restarts and re-reads of a targets file.
    """
    return interval * (zlib.crc32(key.encode()) + 1) / 2**32
