"""Probe adapters: one module per config probe type, binding a capability to the stats flow.

A probe type is a module (``trioprobe.probes.<type>`` for the built-in ones) exporting an
``Options`` attrs class (its type-specific config keys) and
``make_probe(spec, options, targets) -> Probe``. The registry below maps config type names to
those modules; they are imported only when a config uses them, so a
capability's dependencies (pyzmq, say) cost nothing to runs that do not use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

import trio

from ..results import ProbeResult

if TYPE_CHECKING:
    from ..config import ProbeSpec

__all__ = ["PROBE_TYPES", "Probe", "TargetsFn", "load_probe_type"]

#: A callable returning the current targets; it may change between calls.
TargetsFn = Callable[[], Sequence[str]]


class Probe(Protocol):
    """Anything that probes its targets until cancelled and reports each probe as a result."""

    async def run(
        self,
        results: trio.MemorySendChannel[ProbeResult],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``task_status.started()`` once ready, then send results until cancelled."""


class ProbeFactory(Protocol):
    def __call__(self, spec: ProbeSpec, options: object, targets: TargetsFn) -> Probe: ...


#: Config ``type`` name -> adapter module. Add an entry to plug in a probe type of your own.
PROBE_TYPES: dict[str, str] = {
    "http": "trioprobe.probes.http_probe",
    "etcd_probing": "trioprobe.probes.etcd_probing",
    "logping": "trioprobe.probes.logping",
    "zmq": "trioprobe.probes.zmq",
    "tcp": "trioprobe.probes.tcp",
    "udp": "trioprobe.probes.udp",
    "dns": "trioprobe.probes.dns",
    "ping": "trioprobe.probes.ping",
    "external": "trioprobe.probes.external",
}


def load_probe_type(type_name: str) -> ModuleType:
    """Import the adapter module for ``type_name`` (KeyError if the type is unknown)."""
    return importlib.import_module(PROBE_TYPES[type_name])
