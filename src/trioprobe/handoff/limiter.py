"""``RateLimiter``: pace a stream of bytes to a limit in bytes per second.

The reference (InfluxDB's ``limiter``) nudges a delay by at most one second per call and returns
whole seconds only, with no upper bound. This one keeps a *theoretical arrival time* (the GCRA
virtual clock): each ``add(n)`` pushes it ``n / limit`` seconds further, and ``delay()`` is how
far it is ahead of now. So the long-run rate is exact and delays are fractions of a second. The
clock may lag now by at most ``burst`` seconds: that is the credit that makes up for sleeps that
overshoot (trio wakes up a little late, and a 0.5 ms sleep can take a millisecond), and all the
credit idle time can earn. The debt is capped at ``max_delay`` seconds, so one huge record
cannot stall the sender for longer than that.

Time comes from ``trio.current_time()`` (a MockClock drives it in tests), or from ``clock``.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

__all__ = ["RateLimiter"]


class RateLimiter:
    """Paces byte counts to ``limit`` bytes/s (``0`` means unlimited)."""

    def __init__(
        self,
        limit: float,
        *,
        max_delay: float = 1.0,
        burst: float = 0.01,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if limit < 0:
            raise ValueError(f"rate limit must be >= 0 bytes/s, got {limit}")
        if max_delay <= 0:
            raise ValueError(f"max_delay must be > 0 s, got {max_delay}")
        self.limit = limit
        self.max_delay = max_delay
        self.burst = burst
        self._clock = clock
        self._tat: float | None = None

    def add(self, n: int) -> None:
        """Count ``n`` bytes as sent now."""
        if self.limit <= 0:
            return
        now = self._clock()
        tat = now if self._tat is None else max(self._tat, now - self.burst)
        self._tat = min(tat + n / self.limit, now + self.max_delay)

    def delay(self) -> float:
        """Seconds to wait before sending more, in ``[0, max_delay]``."""
        if self.limit <= 0 or self._tat is None:
            return 0.0
        return max(0.0, self._tat - self._clock())

    async def wait(self, n: int) -> None:
        """``add(n)`` and then sleep for ``delay()``."""
        self.add(n)
        d = self.delay()
        if d > 0:
            await trio.sleep(d)
