"""Surfacers: where exported metrics go (Prometheus ``/metrics``, lines on stdout or a file,
InfluxDB).

A surfacer consumes :class:`~trioprobe.metrics.EventMetrics` from its own bounded channel until the
channel ends, then flushes and returns. The metrics it receives are shared with the other surfacers:
read them, never mutate them. A surfacer type is a module here exporting an ``Options`` attrs class
(its config keys) and ``make_surfacer(options) -> Surfacer``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Protocol

import trio

from ..metrics import EventMetrics
from ._fanout import Fanout

__all__ = ["SURFACER_TYPES", "Fanout", "Surfacer", "load_surfacer_type"]


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


#: Config ``type`` name -> surfacer module. Add an entry to plug in a surfacer of your own.
SURFACER_TYPES: dict[str, str] = {
    "lines": "trioprobe.surfacers.lines",
    "prometheus": "trioprobe.surfacers.prometheus",
    "influxdb": "trioprobe.surfacers.influx",
}


def load_surfacer_type(type_name: str) -> ModuleType:
    """Import the module for surfacer type ``type_name`` (KeyError if the type is unknown)."""
    return importlib.import_module(SURFACER_TYPES[type_name])
