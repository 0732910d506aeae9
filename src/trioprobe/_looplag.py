"""Event-loop lag: how late a ticker wakes up, i.e. how long the loop was busy elsewhere.

Every latency trioprobe reports includes the time its task waited for the loop. A prober that
is itself overloaded (too many targets, a blocking call, a GC pause) reports inflated latencies
that look like slow targets; this is how it notices. No peer prober measures itself this way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from ._ticks import Ticker
from .metrics import Distribution, EventMetrics, Kind

__all__ = ["LAG_BUCKETS", "LAG_METRIC", "LAG_WARN_SECONDS", "watch_loop_lag"]

logger = logging.getLogger("trioprobe.runner")

#: The exported metric's name (a Distribution, seconds).
LAG_METRIC = "event_loop_lag_seconds"
#: Buckets in seconds: 100 µs to about 52 s, doubling.
LAG_BUCKETS = Distribution.exponential(base=2.0, scale=1e-4, count=20)
#: Above this p99 over a window, a warning is logged.
LAG_WARN_SECONDS = 0.010
_WARNING = (
    "event loop lag p99 %.1f ms over the last %.0f s: latencies may be inflated by this process"
)


async def watch_loop_lag(
    emit: Callable[[EventMetrics], None] | None,
    *,
    period: float = 0.1,
    export_interval: float = 10.0,
    warn_every: float = 60.0,
    on_lag: Callable[[float], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Sleep ``period`` at a time and record how late each wake-up is, until cancelled.

    Every ``export_interval`` seconds, ``emit`` (unless None: the Runner reads the samples
    through ``on_lag`` and exports them with its own metrics) gets a CUMULATIVE EventMetrics
    with the :data:`LAG_METRIC` Distribution (labelled ``ptype="runner"``); if the p99 of that
    window's samples exceeds :data:`LAG_WARN_SECONDS`, a warning is logged, at most once per
    ``warn_every`` seconds. ``on_lag(seconds)`` sees every sample (the live view shows them).
    """
    lag = LAG_BUCKETS.clone()
    window: list[float] = []
    exports = Ticker(export_interval)
    last_warning = -float("inf")
    task_status.started()
    # A stall swallows the ticks it covers: one sample per stall, and the grid is kept.
    async for tick in Ticker(period):
        late = tick.lateness
        lag.add_sample(late)
        window.append(late)
        if on_lag is not None:
            on_lag(late)
        if exports.poll() is not None:
            if emit is not None:
                emit(
                    EventMetrics(Kind.CUMULATIVE, time.time())
                    .add_label("ptype", "runner")
                    .add_metric(LAG_METRIC, lag.clone())
                )
            window.sort()
            p99 = window[min(len(window) - 1, int(0.99 * len(window)))]
            now = trio.current_time()
            if p99 > LAG_WARN_SECONDS and now - last_warning >= warn_every:
                last_warning = now
                logger.warning(_WARNING, p99 * 1e3, export_interval)
            window.clear()
