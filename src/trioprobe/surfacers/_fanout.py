"""Fan-out: one stream of exported metrics to every surfacer, none of which may stall the rest."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import trio

from ..metrics import EventMetrics

__all__ = ["Fanout"]

logger = logging.getLogger("trioprobe.surfacers")

# A slow surfacer (full channel) or a dead one (closed channel) loses the item.
_UNDELIVERABLE = (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError)
# A surfacer that keeps falling behind is reported at most this often, not once per drop.
_REPORT_EVERY = 10.0


class Fanout:
    """Copy each item from one channel into each surfacer's own bounded channel.

    Sends never wait: a full channel (a slow surfacer) or a closed one (a dead surfacer) costs that
    surfacer the item, which is counted in :attr:`dropped` and logged, so the stats keepers behind
    the fan-out are never held up by a surfacer. When the source ends, every surfacer channel is
    closed so the surfacers can flush and return.
    """

    def __init__(
        self,
        sinks: Sequence[tuple[str, trio.MemorySendChannel[EventMetrics]]],
        *,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self._sinks = list(sinks)
        #: Added to every item (a fleet agent's ``agent`` label: one place covers every export).
        self._labels = dict(labels or {})
        #: Items each surfacer had to drop, by surfacer name.
        self.dropped: dict[str, int] = {name: 0 for name, _ in sinks}
        self._last_report: dict[str, float] = {}

    def add(self, name: str, channel: trio.MemorySendChannel[EventMetrics]) -> None:
        """Copy to ``channel`` too from now on (a surfacer started by a reload)."""
        self._sinks.append((name, channel))
        self.dropped.setdefault(name, 0)

    def remove(self, name: str) -> None:
        """Stop copying to surfacer ``name`` and close its channel, so it drains and returns."""
        for entry in [e for e in self._sinks if e[0] == name]:
            self._sinks.remove(entry)
            entry[1].close()

    async def run(
        self,
        source: trio.MemoryReceiveChannel[EventMetrics],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            async with source:
                task_status.started()
                async for em in source:
                    for key, value in self._labels.items():
                        em.add_label(key, value)
                    for name, channel in self._sinks:
                        try:
                            channel.send_nowait(em)
                        except _UNDELIVERABLE:
                            self._drop(name)
        finally:
            for _, channel in self._sinks:
                channel.close()
            for name, count in self.dropped.items():
                if count:
                    logger.warning("surfacer %r dropped %d metrics in total", name, count)

    def _drop(self, name: str) -> None:
        self.dropped[name] += 1
        now = trio.current_time()
        if now - self._last_report.get(name, -_REPORT_EVERY) >= _REPORT_EVERY:
            self._last_report[name] = now
            logger.warning(
                "surfacer %r is falling behind or has stopped: %d metrics dropped so far",
                name,
                self.dropped[name],
            )
