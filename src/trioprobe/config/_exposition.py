"""What a config's probes will export: the series per target, and names that do not line up.

These read a validated :class:`~trioprobe.config.Config` for ``trioprobe check`` and the start
of a run; they check nothing that would make the config invalid, so they are apart from parsing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..probes import probe_types
from ..results import LATENCY_UNITS
from ..specs import ProbeSpec
from ..surfacers import NamePrefix
from ..surfacers._naming import BUILTIN_EXPORTS, CORE_EXPORTS, clash_warnings, series_per_target

if TYPE_CHECKING:
    from . import Config


def exposition_warnings(config: Config) -> list[str]:
    """Where this config's probes export one metric name in ways that do not line up (different
    types, or latency histograms with different buckets): nothing is lost, but users should
    know. Probe types of your own are seen through their module's ``EXPORTS``, if any."""
    probes = []
    for spec, _ in config.probes:
        exports = dict(CORE_EXPORTS)
        own = BUILTIN_EXPORTS.get(spec.type)
        if own is None:
            own = probe_types.hook(spec.type, "EXPORTS")
        exports.update(own)
        probes.append((spec.name, exports, _latency_bounds(spec)))
    prefixes = [
        o.prefix
        for s, o in config.surfacers
        if s.type == "prometheus" and isinstance(o, NamePrefix)
    ]
    return clash_warnings(probes, prefixes[0] if prefixes else "trioprobe_")


def _latency_bounds(spec: ProbeSpec) -> tuple[float, ...] | None:
    buckets = spec.latency_buckets
    if not buckets:
        return None
    return tuple(buckets.distribution(LATENCY_UNITS[spec.latency_unit]).lower_bounds[1:])


def probe_series(spec: ProbeSpec, options: Any) -> int:
    """Series each target of this probe adds to /metrics (``trioprobe check`` prints it)."""
    return series_per_target(spec.type, options, _latency_bounds(spec))
