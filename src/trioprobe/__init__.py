"""trioprobe: continuous health and latency probing of distributed systems, built on Trio.

The core is a flow of values through tasks a nursery owns::

    probes --ProbeResult--> stats_keeper (one per probe) --EventMetrics--> Fanout --> surfacers

The capability packages (:mod:`trioprobe.probing`, :mod:`trioprobe.logping`,
:mod:`trioprobe.handoff`, :mod:`trioprobe.zmqnet`) are usable on their own; the names below are
the core that binds them together.
"""

from __future__ import annotations

from .config import Config, ConfigError, ProbeSpec, SurfacerSpec, load_config, parse_config
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

__all__ = [
    # results and metrics
    "ProbeResult",
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
