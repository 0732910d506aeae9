"""Probe adapters: one module per config probe type, binding a capability to the stats flow.

A probe type is a module exporting an ``Options`` attrs class (its type-specific config keys) and
``make_probe(spec, options, targets) -> Probe``, and optionally ``EXPORTS`` (what it exports
beyond the common metrics, for ``trioprobe check``'s name-clash warnings) and
``check_target(target)`` (raises ``ValueError`` for a bad target). :data:`probe_types` maps config
type names to those modules: the built-in ones (``trioprobe.probes.<type>``, but
``trioprobe.probes.http_probe`` for ``http``: a module named ``http`` would shadow the standard
library's), the ones installed
packages declare in the ``trioprobe.probes`` entry-point group, and ones registered in code.
docs/extending.md walks through writing one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ..registry import Registry
from ..results import ProbeResult

if TYPE_CHECKING:
    from ._base import ScheduledProbe, run_per_target, send_result

__all__ = [
    "Probe",
    "ScheduledProbe",
    "TargetsFn",
    "probe_types",
    "run_per_target",
    "send_result",
]

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


#: Config ``type`` name -> probe type module.
probe_types = Registry(
    "probe",
    "trioprobe.probes",
    {
        "http": "trioprobe.probes.http_probe",
        "etcd_probing": "trioprobe.probes.etcd_probing",
        "logping": "trioprobe.probes.logping",
        "zmq": "trioprobe.probes.zmq",
        "tcp": "trioprobe.probes.tcp",
        "udp": "trioprobe.probes.udp",
        "dns": "trioprobe.probes.dns",
        "ping": "trioprobe.probes.ping",
        "external": "trioprobe.probes.external",
        "grpc": "trioprobe.probes.grpc",
        "script": "trioprobe.probes.script",
    },
    required=("Options", "make_probe"),
    # What a type may declare beyond that (docs/extending.md): its metrics beyond the common
    # ones, for ``trioprobe check``'s clash warnings, and a check of one target string.
    optional={"EXPORTS": {}, "check_target": None},
)


#: The helpers a probe type of your own builds on, and the modules they live in (which import
#: this one, so they are loaded on first use).
_HELPERS = {"run_per_target": "_base", "send_result": "_base", "ScheduledProbe": "_base"}


def __getattr__(name: str) -> Any:
    if name in _HELPERS:
        module = importlib.import_module(f"{__name__}.{_HELPERS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
