"""Surfacers: where exported metrics go (Prometheus ``/metrics``, lines on stdout or a file,
InfluxDB).

A surfacer consumes :class:`~trioprobe.metrics.EventMetrics` from its own bounded channel until the
channel ends, then flushes and returns. The metrics it receives are shared with the other surfacers:
read them, never mutate them. A surfacer type is a module exporting an ``Options`` attrs class
(its config keys) and ``make_surfacer(options) -> Surfacer``; :data:`surfacer_types` maps config
type names to those modules (built-in, from the ``trioprobe.surfacers`` entry-point group, or
registered in code). docs/extending.md shows one.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import trio

from ..metrics import EventMetrics
from ..registry import Registry
from ._fanout import Fanout

__all__ = ["Fanout", "SelfMetrics", "Surfacer", "surfacer_types"]


class Surfacer(Protocol):
    """Anything that consumes exported metrics."""

    #: Used in drop reports and logs.
    name: str

    async def run(
        self,
        metrics: trio.MemoryReceiveChannel[EventMetrics],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``task_status.started()`` once ready; consume until ``EndOfChannel``; flush."""


@runtime_checkable
class SelfMetrics(Protocol):
    """A surfacer with metrics of its own (a handoff queue's backlog): the runner's one
    self-metrics exporter reads them every export interval, labelled ``ptype="runner"``."""

    def self_metrics(self) -> list[EventMetrics]: ...


#: Config ``type`` name -> surfacer type module.
surfacer_types = Registry(
    "surfacer",
    "trioprobe.surfacers",
    {
        "lines": "trioprobe.surfacers.lines",
        "prometheus": "trioprobe.surfacers.prometheus",
        "influxdb": "trioprobe.surfacers.influx",
    },
    required=("Options", "make_surfacer"),
)
