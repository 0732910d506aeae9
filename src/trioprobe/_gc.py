"""Keeping the garbage collector's full passes out of the probes' measurements.

CPython's full (generation 2) collection walks every container object the process holds. In a
prober nearly all of them live as long as their target (clients, connections, accumulators,
history rings), so a full pass finds nothing among them, yet at 5,000 targets it held the event
loop for 0.2-0.5 s, several times a minute, and every probe in flight reported that pause as its
target's latency.

:class:`GcGovernor` freezes (``gc.freeze``) what survives each older-generation collection, as
soon as that collection ends: full passes then walk only what became long-lived since the last
one, a few thousand objects instead of the whole heap. Freezing changes nothing for objects that
die by reference counting (nearly all of them); what it gives up is finding *reference cycles*
among frozen objects. Two things keep that bounded and visible instead of silent:

- transports break the cycles they know of where they arise (trio's failed connection attempts:
  :func:`trioprobe._tcp.open_tcp_stream`), so a steady run makes almost no cyclic garbage;
- every ``reclaim_every`` seconds the governor thaws the heap and runs one full pass, which frees
  whatever cycles were frozen; its pause and what it found are exported
  (``gc_reclaimed_objects_total``, ``gc_reclaim_pause_seconds``) and logged when it found any.

The trade: one full pause per ``reclaim_every`` (an hour by default) instead of one every few
seconds. ``gc.freeze`` is process-wide, so this is for a process that exists to probe (the CLI);
embedding code opts in with ``Runner(freeze_gc=True)``.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Mapping

import attrs
import trio

from .metrics import EventMetrics, Float, Int, Kind

__all__ = ["DEFAULT_RECLAIM_EVERY", "GcGovernor"]

logger = logging.getLogger("trioprobe.runner")

#: Seconds between the governor's full passes (the only ones that walk the frozen heap).
DEFAULT_RECLAIM_EVERY = 3600.0


@attrs.define
class GcGovernor:
    """Freezes the survivors of every older-generation collection while :meth:`run` runs, and
    reclaims frozen cycles every ``reclaim_every`` seconds (see the module's docstring)."""

    reclaim_every: float = DEFAULT_RECLAIM_EVERY
    reclaims: int = 0
    reclaimed_objects: int = 0
    last_reclaim_pause: float = 0.0

    def _freeze_survivors(self, phase: str, info: Mapping[str, int]) -> None:
        # A generation-1 or -2 pass has just moved its survivors into the oldest generation and
        # the young ones are empty: freezing now takes what lives on and no young garbage.
        if phase == "stop" and info["generation"] >= 1:
            gc.freeze()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Govern until cancelled; on the way out, thaw the heap, so a process that goes on
        (tests, embedding code) gets its collector back as it was."""
        # The start-up heap (modules, config) as it is: a collection first would walk all of it
        # (tens of ms with 10,000 targets configured) while the probes start; whatever garbage
        # it holds is freed by the first reclaim.
        gc.freeze()
        gc.callbacks.append(self._freeze_survivors)
        try:
            task_status.started()
            while True:
                await trio.sleep(self.reclaim_every)
                self.reclaim()
        finally:
            gc.callbacks.remove(self._freeze_survivors)
            gc.unfreeze()

    def reclaim(self) -> int:
        """One full pass over the thawed heap (a pause as long as the collector's own full pass),
        then freeze again; returns how many unreachable objects it found."""
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self.last_reclaim_pause = time.perf_counter() - started
        self.reclaims += 1
        self.reclaimed_objects += found
        if found:
            logger.info(
                "garbage collector: %d unreachable objects freed in a %.0f ms full pass",
                found,
                self.last_reclaim_pause * 1e3,
            )
        return found

    def collect(self) -> list[EventMetrics]:
        """The runner's self-metrics (``ptype="runner"``): reclaims, what they freed, the pause."""
        counter = EventMetrics(Kind.CUMULATIVE).add_label("ptype", "runner")
        counter.add_metric("gc_reclaims", Int(self.reclaims))
        counter.add_metric("gc_reclaimed_objects", Int(self.reclaimed_objects))
        # Not gc.get_freeze_count(): it walks the whole frozen list, a stall as long as the
        # full pass this module exists to avoid.
        gauge = EventMetrics(Kind.GAUGE).add_label("ptype", "runner")
        gauge.add_metric("gc_reclaim_pause_seconds", Float(self.last_reclaim_pause))
        return [counter, gauge]
