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

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import trio

from ..metrics import EventMetrics
from ..registry import Registry
from ._fanout import Fanout

if TYPE_CHECKING:
    from ..reload import ReloadOutcome

__all__ = [
    "Fanout",
    "HasQueueDir",
    "LiveMetrics",
    "NamePrefix",
    "Reloadable",
    "SelfMetrics",
    "Serving",
    "Surfacer",
    "surfacer_types",
]


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


@runtime_checkable
class LiveMetrics(Protocol):
    """A surfacer that reads the stats keepers when it is asked (a /metrics scrape) instead of
    waiting for the next export: the runner attaches its live source before the first probe."""

    def attach_live_source(self, source: Callable[[], Awaitable[list[EventMetrics]]]) -> None: ...


@runtime_checkable
class Reloadable(Protocol):
    """A surfacer that can ask for a config reload (prometheus's ``POST /-/reload``): the
    runner sets ``reload_handler`` when the run has a config file to re-read."""

    reload_handler: Callable[[], Awaitable[ReloadOutcome]] | None


@runtime_checkable
class Serving(Protocol):
    """A surfacer that serves HTTP: ``url`` is where, once it has started (None before)."""

    url: str | None


@runtime_checkable
class HasQueueDir(Protocol):
    """Surfacer options naming a handoff queue directory: ``trioprobe check`` refuses two
    users of one directory (the first to open it locks it)."""

    def resolved_queue_dir(self) -> str: ...


@runtime_checkable
class NamePrefix(Protocol):
    """Surfacer options with the prefix of exported metric names (prometheus's ``prefix``),
    which ``trioprobe check`` uses in its name-clash warnings."""

    prefix: str


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
