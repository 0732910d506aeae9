"""Rate-limited logging for servers that a hostile client can make fail on every request.

A server must log what goes wrong with a client, but a client that sends garbage in a loop must
not be able to fill the disk or drown the log: each kind of problem is logged at most once per
``interval`` seconds, and the next line says how many were left out in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Logs at most one line per ``interval`` seconds for each ``kind`` of problem.

    ``clock`` is monotonic seconds (injectable for tests); wall time would make the limit jump
    with clock changes.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        # kind -> (time of the last line logged, lines suppressed since)
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, kind: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless a ``kind`` line was logged too recently; True if logged."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last[0] < self.interval:
            self._last[kind] = (last[0], last[1] + 1)
            return False
        suppressed = last[1] if last is not None else 0
        self._last[kind] = (now, 0)
        if suppressed:
            msg += " (%d more like this not logged)"
            args = (*args, suppressed)
        self.logger.warning(msg, *args)
        return True
