"""Exposition names: how an internal metric name becomes a Prometheus family and an InfluxDB field.

One rule for every metric, built-in or added later, so a new metric gets a conventional name
without anyone editing a list:

* the **shape** comes from the value: a ``Distribution`` is a histogram, a ``String`` an info
  metric, a CUMULATIVE number or ``Map`` a counter, a GAUGE number or ``Map`` a gauge;
* the **unit** comes from the name: a name that already ends in a base unit (``_seconds``,
  ``_bytes``, ``_ratio``) keeps it, and a duration (a name ending in ``latency``, ``duration``,
  ``rtt``, ``lag``, ``delay``, ``elapsed`` or ``_diff``) gets ``_seconds``. trioprobe measures
  every duration in seconds (``ProbeResult.latency`` included), so nothing is converted, only
  named;
* a few built-in names are renamed where the rule alone would read badly (``total`` would become
  ``total_total``), and have a hand-written HELP text (:data:`KNOWN`); every other metric gets a
  HELP text saying what it is.

The Prometheus family name is ``prefix + base`` (a counter's sample adds ``_total``); the
InfluxDB field is ``base`` (plus ``_sum``/``_count``/``_le_<bound>`` or ``_<key>``), so the two
line up.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping

import attrs

from .._httptrace import PHASES
from ..metrics import Distribution, EventMetrics, Float, Int, Kind, Map, String, Value

__all__ = [
    "BUILTIN_EXPORTS",
    "CLASH_PRECEDENCE",
    "CLASH_SUFFIX",
    "CORE_EXPORTS",
    "INFLUX_ONLY",
    "KNOWN",
    "clash_renamed",
    "clash_warnings",
    "cumulative_buckets",
    "Family",
    "exported_values",
    "exports_for",
    "family_for",
    "sanitize_label",
    "sanitize_name",
    "series_per_target",
]


@attrs.frozen
class Family:
    """An exported family: ``name`` has no prefix and no ``_total``; ``unit`` is its base unit."""

    name: str
    type: str  # "counter", "gauge", "histogram" or "info"
    unit: str
    help: str


#: Built-in metrics: internal name -> (exported base name, HELP text). Units follow the rule.
KNOWN: Mapping[str, tuple[str, str]] = {
    "total": ("probes", "Probes made."),
    "success": ("success", "Probes that succeeded."),
    "timeouts": ("timeouts", "Probes that ran out of their deadline."),
    "latency": (
        "latency",
        "Latency of successful probes. A probe without latency_buckets has only the +Inf bucket.",
    ),
    "up": ("up", "1 if the target's last probe succeeded, 0 if it failed."),
    "health_up": (
        "health_up",
        "1 while the alerting state of the target is up, 0 while down (absent while unknown).",
    ),
    "alert_firing": ("alert_firing", "1 while the target's alert is firing."),
    "health_transitions": ("health_transitions", "Changes of the target's alerting state."),
    "failures": (
        "failures",
        "Failed probes by reason and phase (see trioprobe.failures.FailureReason; "
        "docs/metrics.md lists the reasons and the probe types that produce each).",
    ),
    "resp-code": ("resp_code", "HTTP responses by status code."),
    **{
        f"phase_{phase}": (
            f"phase_{phase}_seconds",
            f"Time of the {phase!r} phase of HTTP probes (http detail = full).",
        )
        for phase in PHASES
    },
    "validation_failure": ("validation_failure", "Responses that failed a validator."),
    "srtt": ("srtt", "Smoothed round-trip time to the peer (etcd probing)."),
    "clock_diff": (
        "clock_diff",
        "Estimated clock difference to the peer; positive when the local clock is ahead.",
    ),
    "last_applied": ("last_applied_index", "Index of the last log entry the log pinger read."),
    "appends_succeeded": ("appends_succeeded", "Log appends that succeeded (log ping)."),
    "appends_failed": ("appends_failed", "Log appends that failed (log ping)."),
    "disconnects": ("disconnects", "Reader disconnects (log ping)."),
    "restarts": ("restarts", "Log ping rounds restarted after a failure."),
    "replay_errors": ("replay_errors", "Failed attempts to get the log's replay position."),
    "results_dropped": ("results_dropped", "Log ping results dropped on a full buffer."),
    "append_latency": ("append_latency", "Latency of log appends (log ping)."),
    "handoff_backlog_bytes": (
        "handoff_backlog_bytes",
        "Bytes in the InfluxDB surfacer's handoff queue not yet delivered.",
    ),
    "handoff_disk_usage_bytes": (
        "handoff_disk_usage_bytes",
        "Bytes the InfluxDB surfacer's handoff queue takes on disk.",
    ),
}

#: When values of different types claim one family name, the type first here keeps the name and
#: each other one gets its suffix (before the unit), so nothing is dropped and the names do not
#: depend on which series came first.
CLASH_PRECEDENCE = ("histogram", "counter", "gauge", "info")
CLASH_SUFFIX: Mapping[str, str] = {"counter": "_cumulative", "gauge": "_current", "info": "_text"}

_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_BASE_UNITS = ("seconds", "bytes", "ratio")
_DURATION = re.compile(r"(?:^|_)(?:latency|duration|rtt|srtt|lag|delay|elapsed|diff)$")
_TYPE_NAMES = {"counter": "a counter", "gauge": "a gauge", "histogram": "a histogram"}


def sanitize_name(name: str) -> str:
    """A valid metric name part: invalid characters (``:`` too) become ``_``; no leading digit.

    ``:`` is reserved for recording rules, so it is replaced too.
    """
    name = _INVALID_NAME_CHARS.sub("_", name)
    return f"_{name}" if not name or name[0].isdigit() else name


def sanitize_label(name: str) -> str:
    """A valid label name (labels starting ``__`` are reserved, so they get an ``x``)."""
    name = sanitize_name(name)
    return f"x{name}" if name.startswith("__") else name


def _unit(base: str) -> tuple[str, str]:
    for unit in _BASE_UNITS:
        if base.endswith("_" + unit):
            return base, unit
    if _DURATION.search(base):
        return f"{base}_seconds", "seconds"
    return base, ""


def family_for(name: str, value: Value, kind: Kind) -> Family:
    """The family internal metric ``name`` with this value is exported in (see the module doc)."""
    known = KNOWN.get(name)
    base = known[0] if known else sanitize_name(name)
    if isinstance(value, Distribution):
        type_ = "histogram"
    elif isinstance(value, String):
        type_ = "info"
    elif kind is Kind.CUMULATIVE:
        type_ = "counter"
    else:
        type_ = "gauge"
    if type_ == "counter":
        base = base.removesuffix("_total") or "total"
    if type_ == "info":
        base = base.removesuffix("_info") or "info"
        base, unit = base, ""
    else:
        base, unit = _unit(base)
    if known:
        help_text = known[1]
    elif type_ == "info":
        help_text = f"Text value {name!r} as the label of a constant 1."
    else:
        keyed = " by key" if isinstance(value, Map) else ""
        help_text = f"Metric {name!r}: {_TYPE_NAMES[type_]}{keyed}."
    return Family(base, type_, unit, help_text)


def cumulative_buckets(dist: Distribution) -> Iterator[tuple[float, int]]:
    """(upper bound, samples up to it) per bucket, ending with ``+Inf``: Prometheus's ``le``."""
    cumulative = 0
    bounds = dist.lower_bounds
    for i, count in enumerate(dist.bucket_counts):
        cumulative += count
        yield (bounds[i + 1] if i + 1 < len(bounds) else math.inf), cumulative


#: Metrics only InfluxDB gets: the last failure's reason and phase as string fields. In
#: Prometheus a text value is an info metric whose label changes with every new reason (a new
#: series each time); ``failures_total{reason, phase}`` answers the same question there.
INFLUX_ONLY = frozenset({"last_failure_reason", "last_failure_phase"})


def exported_values(
    em: EventMetrics, *, prometheus: bool = False
) -> Iterator[tuple[Family, Value]]:
    """Each value of ``em`` with its family, in one shape per family.

    One value is made here: a probe without ``latency_buckets`` accumulates ``latency`` as a plain
    sum of its successful probes' latencies; it is exported as a histogram with only the
    ``+Inf`` bucket (count = ``success``), so every probe's latency is in one
    ``latency_seconds`` family, and ``rate(_sum) / rate(_count)`` works for all of them.
    ``failures`` (by ``reason`` and ``phase``) is a map the results themselves carry (see
    :class:`~trioprobe.failures.Failure`): a target that never failed has none. With
    ``prometheus``, the :data:`INFLUX_ONLY` values are left out.
    """
    for name, value in em.metrics.items():
        if prometheus and name in INFLUX_ONLY:
            continue
        if name == "latency" and isinstance(value, Float) and em.kind is Kind.CUMULATIVE:
            success = em.metric("success")
            count = success.value if isinstance(success, Int) else 0
            value = Distribution((-math.inf,), [count], value.value, count)
        yield family_for(name, value, em.kind), value


#: Every probe's core metrics: name -> (a value of its type, kind).
CORE_EXPORTS: Mapping[str, tuple[Value, Kind]] = {
    "total": (Int(), Kind.CUMULATIVE),
    "success": (Int(), Kind.CUMULATIVE),
    "timeouts": (Int(), Kind.CUMULATIVE),
    "latency": (Distribution((-math.inf,)), Kind.CUMULATIVE),
    "up": (Int(), Kind.GAUGE),
    "failures": (Map("reason/phase"), Kind.CUMULATIVE),
}

#: What the built-in probe types export beside the core metrics. A probe type of your own can
#: declare the same as ``EXPORTS`` in its module, so ``trioprobe check`` can see clashes.
BUILTIN_EXPORTS: Mapping[str, Mapping[str, tuple[Value, Kind]]] = {
    "http": {
        "resp-code": (Map("code"), Kind.CUMULATIVE),
        "validation_failure": (Map("validator"), Kind.CUMULATIVE),
        "redirects": (Int(), Kind.CUMULATIVE),
        "connections": (Map("state"), Kind.CUMULATIVE),
        **{f"phase_{phase}": (Distribution((-math.inf,)), Kind.CUMULATIVE) for phase in PHASES},
        "tls_version": (String(), Kind.GAUGE),
        "cert_expiry": (Int(), Kind.GAUGE),
    },
    "etcd_probing": {"srtt": (Float(), Kind.GAUGE), "clock_diff": (Float(), Kind.GAUGE)},
    "logping": {
        **{
            name: (Int(), Kind.CUMULATIVE)
            for name in (
                "appends_succeeded",
                "appends_failed",
                "disconnects",
                "restarts",
                "replay_errors",
                "results_dropped",
            )
        },
        "append_latency": (Distribution((-math.inf,)), Kind.CUMULATIVE),
        "last_applied": (Int(), Kind.GAUGE),
    },
    "zmq": {},
    "tcp": {
        "connect_latency": (Distribution((-math.inf,)), Kind.CUMULATIVE),
        "tls_handshake_duration": (Distribution((-math.inf,)), Kind.CUMULATIVE),
        "exchange_latency": (Distribution((-math.inf,)), Kind.CUMULATIVE),
        "errors": (Map("cause"), Kind.CUMULATIVE),
        "cert_expiry": (Int(), Kind.GAUGE),
    },
    "udp": {"late": (Int(), Kind.CUMULATIVE), "reordered": (Int(), Kind.CUMULATIVE)},
    "grpc": {
        "connect_latency": (Distribution((-math.inf,)), Kind.CUMULATIVE),
        "tls_handshake_duration": (Distribution((-math.inf,)), Kind.CUMULATIVE),
        "response_latency": (Distribution((-math.inf,)), Kind.CUMULATIVE),
        "serving_status": (Map("status"), Kind.CUMULATIVE),
        "grpc_status": (Map("code"), Kind.CUMULATIVE),
        "errors": (Map("cause"), Kind.CUMULATIVE),
    },
    "script": {
        "step_duration": (Map("step"), Kind.GAUGE),
        "step_failures": (Map("step"), Kind.CUMULATIVE),
        "errors": (Map("cause"), Kind.CUMULATIVE),
        "loop_blocked": (Int(), Kind.CUMULATIVE),
    },
    "dns": {"rcode": (Map("rcode"), Kind.CUMULATIVE), "ignored_replies": (Int(), Kind.CUMULATIVE)},
    "ping": {
        "sent": (Int(), Kind.CUMULATIVE),
        "received": (Int(), Kind.CUMULATIVE),
        "rtt": (Distribution((-math.inf,)), Kind.CUMULATIVE),
        "ttl": (Int(), Kind.GAUGE),
    },
    # What an external program prints is known only at run time.
    "external": {},
}


#: Keys a Map holds per target where the probe type fixes them; any other Map is counted as one
#: key (a status code, an rcode: what a healthy target shows).
_MAP_KEYS = {"failures": 0, "errors": 7, "connections": 2}
_HTTPS_ONLY = frozenset({"phase_tls", "tls_version", "cert_expiry"})


def exports_for(probe_type: str, options: object) -> dict[str, tuple[Value, Kind]]:
    """What a probe of ``probe_type`` with these options exports per target, core metrics
    included: the built-in table, less what its options leave out (http's ``detail``)."""
    exports = dict(CORE_EXPORTS)
    exports.update(BUILTIN_EXPORTS.get(probe_type, {}))
    if probe_type == "http":
        dropped = set()
        if getattr(options, "detail", "full") != "full":
            dropped |= {f"phase_{phase}" for phase in PHASES} | {"connections"}
        if not getattr(options, "follow_redirects", False):
            dropped.add("redirects")
        validators = _validators(options)
        if not validators:
            dropped.add("validation_failure")
        exports = {name: spec for name, spec in exports.items() if name not in dropped}
    return exports


def _validators(options: object) -> int:
    keys = ("body_regex", "header_checks", "json_paths", "json_subset")
    return sum(1 for key in keys if getattr(options, key, None))


def series_per_target(
    probe_type: str,
    options: object,
    latency_bounds: tuple[float, ...] | None,
    *,
    https: bool = True,
) -> int:
    """Series one target of this probe adds to /metrics (what ``trioprobe check`` prints).

    A histogram counts its buckets (``+Inf`` included), ``_sum`` and ``_count``; a Map its fixed
    keys, or one (a status code). An http target is counted as https (the TLS gauges and
    phase) unless ``https`` is false. An external program's own metrics are not included.
    """
    from ..probes.http_probe import PHASE_BUCKETS  # here: the probe types import this module

    total = 0
    for name, (value, _) in exports_for(probe_type, options).items():
        if not https and probe_type == "http" and name in _HTTPS_ONLY:
            continue
        if name == "latency":
            total += len(latency_bounds or ()) + 3
        elif name.startswith("phase_"):
            total += len(PHASE_BUCKETS.lower_bounds) + 2
        elif isinstance(value, Distribution):
            total += len(value.lower_bounds) + 2
        elif isinstance(value, Map):
            keys = _validators(options) if name == "validation_failure" else 1
            total += _MAP_KEYS.get(name, keys)
        else:
            total += 1
    return total


def clash_renamed(family: Family) -> Family:
    """``family`` under its name for a clash: its type's :data:`CLASH_SUFFIX` before the unit."""
    stem = family.name.removesuffix("_" + family.unit) if family.unit else family.name
    name = stem + CLASH_SUFFIX[family.type] + (f"_{family.unit}" if family.unit else "")
    return attrs.evolve(family, name=name)


def _layout(bounds: tuple[float, ...] | None) -> str:
    if not bounds:
        return "only +Inf (no latency_buckets)"
    return f"{len(bounds)} bounds from {bounds[0]:g} to {bounds[-1]:g} s"


def clash_warnings(
    probes: Iterable[tuple[str, Mapping[str, tuple[Value, Kind]], tuple[float, ...] | None]],
    prefix: str = "trioprobe_",
) -> list[str]:
    """What to warn about in a config whose probes export these metrics.

    ``probes`` gives each probe's name, its metrics (name -> (value, kind)) and its latency
    bucket upper bounds in seconds (None without ``latency_buckets``). Two cases are reported:
    one name exported with different types (all are kept, the others renamed as
    :data:`CLASH_SUFFIX` says), and latency histograms with different buckets in one
    family (all are kept, but summing their buckets across probes mixes layouts).
    """
    warnings: list[str] = []
    claims: dict[str, dict[str, tuple[Family, list[str]]]] = {}
    layouts: dict[tuple[float, ...] | None, list[str]] = {}
    for probe, exports, bounds in probes:
        layouts.setdefault(bounds, []).append(probe)
        for name, (value, kind) in exports.items():
            family = family_for(name, value, kind)
            by_type = claims.setdefault(family.name, {})
            by_type.setdefault(family.type, (family, []))[1].append(f"{probe!r} ({name})")
    for name, by_type in claims.items():
        if len(by_type) > 1:
            uses = "; ".join(f"a {t} in {', '.join(p)}" for t, (_, p) in by_type.items())
            keeps = min(by_type, key=CLASH_PRECEDENCE.index)
            renamed = ", ".join(
                f"the {t} as {prefix}{clash_renamed(f).name}"
                for t, (f, _) in by_type.items()
                if t != keeps
            )
            warnings.append(
                f"{prefix}{name} is exported with different types ({uses}); all are kept: the "
                f"{keeps} under this name, {renamed} (see docs/metrics.md)"
            )
    if len(layouts) > 1:
        uses = "; ".join(f"{', '.join(map(repr, p))}: {_layout(b)}" for b, p in layouts.items())
        warnings.append(
            f"{prefix}latency_seconds has different buckets per probe ({uses}); every probe's "
            "latency is exported, each series with its own buckets, but do not sum _bucket "
            "series across these probes (aggregate by probe, or give them the same "
            "latency_buckets)"
        )
    return warnings
