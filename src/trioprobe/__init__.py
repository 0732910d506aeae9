"""trioprobe: continuous health and latency probing of distributed systems, built on Trio.

The core is a flow of values through tasks a nursery owns::

    probes --ProbeResult--> stats_keeper (one per probe) --EventMetrics--> Fanout --> surfacers

The capability packages (:mod:`trioprobe.probing`, :mod:`trioprobe.logping`,
:mod:`trioprobe.handoff`, :mod:`trioprobe.zmqnet`) are usable on their own; the names below are
the core that binds them together.

Importing this package loads none of them: each name is imported on first use (PEP 562), so
``import trioprobe.handoff`` costs the queue and its leaf modules only, not the config loader
(cattrs), the surfacers or the HTTP clients.
"""

from __future__ import annotations

import importlib as _importlib
from types import ModuleType as _ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config, ConfigError, ProbeSpec, SurfacerSpec, load_config, parse_config
    from .failures import Failure, FailureReason, Phase
    from .metrics import (
        Distribution,
        EventMetrics,
        Float,
        Int,
        Kind,
        Map,
        MetricsError,
        String,
        Value,
    )
    from .probes import Probe
    from .results import ProbeResult
    from .runner import Runner, StartupError, run
    from .stats import StatsKeeper, stats_keeper
    from .surfacers import Fanout, Surfacer

__version__ = "0.1.0"

#: Where each name of ``__all__`` lives, for :func:`__getattr__`.
_LAZY = {
    "ProbeResult": "results",
    "Failure": "failures",
    "FailureReason": "failures",
    "Phase": "failures",
    "EventMetrics": "metrics",
    "Kind": "metrics",
    "Int": "metrics",
    "Float": "metrics",
    "String": "metrics",
    "Map": "metrics",
    "Distribution": "metrics",
    "Value": "metrics",
    "MetricsError": "metrics",
    "Probe": "probes",
    "StatsKeeper": "stats",
    "stats_keeper": "stats",
    "Surfacer": "surfacers",
    "Fanout": "surfacers",
    "Config": "config",
    "ConfigError": "config",
    "ProbeSpec": "config",
    "SurfacerSpec": "config",
    "load_config": "config",
    "parse_config": "config",
    "Runner": "runner",
    "StartupError": "runner",
    "run": "runner",
}

__all__ = [
    # results and metrics
    "ProbeResult",
    "Failure",
    "FailureReason",
    "Phase",
    "EventMetrics",
    "Kind",
    "Int",
    "Float",
    "String",
    "Map",
    "Distribution",
    "Value",
    "MetricsError",
    # the flow
    "Probe",
    "StatsKeeper",
    "stats_keeper",
    "Surfacer",
    "Fanout",
    # configuration and running
    "Config",
    "ConfigError",
    "ProbeSpec",
    "SurfacerSpec",
    "load_config",
    "parse_config",
    "Runner",
    "StartupError",
    "run",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    """The public names only: ``__all__`` (loaded or not: listing them imports nothing), the
    version, and the public subpackages imported so far; not the helpers this module itself
    imports (``Any``, ``TYPE_CHECKING``, ``annotations``...)."""
    loaded = [
        name
        for name, value in globals().items()
        if isinstance(value, _ModuleType) and not name.startswith("_")
    ]
    return sorted({*__all__, "__version__", *loaded})
