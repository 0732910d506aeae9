"""``ProbeResult``: what one probe of one target produced.

Probes send these over a Trio memory channel to their stats keeper, which folds
:meth:`ProbeResult.metrics` into a per-target accumulator. A result is immutable so that it can be
shared between the keeper and any observer (the CLI's live view) without copying.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType

import attrs

from ._scrub import scrub
from .failures import Failure, FailureReason, Phase, current_phase, timed_out
from .metrics import Distribution, EventMetrics, Float, Int, Kind, Map, Value, as_value

__all__ = ["FAILURES_MAP", "LATENCY_UNITS", "ProbeResult"]

#: The label names of the ``failures`` counter's map: its keys are ``Failure.key`` values
#: (``reason/phase``), and the surfacers split both into labels of their own.
FAILURES_MAP = "reason/phase"

#: Units the config's ``latency_buckets`` bounds may be written in, as seconds per unit.
LATENCY_UNITS: Mapping[str, float] = MappingProxyType(
    {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
)


# Most results carry no extras or no gauges: they share this one empty mapping instead of two
# new containers each (a dict and its proxy), which the garbage collector would track (issue 19).
_EMPTY: Mapping[str, object] = MappingProxyType({})


def _freeze(mapping: Mapping[str, object]) -> Mapping[str, object]:
    if not mapping:
        return _EMPTY
    return MappingProxyType(dict(mapping))


def _scrub_error(error: str | None) -> str | None:
    # Every error a probe reports passes here, so no configured secret (nor a fragment of one)
    # reaches the live table, /status, /status.json, InfluxDB, logs or notices.
    return error if error is None else scrub(error)


@attrs.frozen
class ProbeResult:
    """The outcome of probing ``target`` once.

    Attributes:
        target: what was probed (a URL, an address, a log's name).
        success: whether the probe succeeded.
        latency: seconds the probe took; only counted when ``success`` is true.
        timestamp: wall-clock time (``time.time()``) when the result was made.
        error: why it failed, for people (``None`` on success); scrubbed of every registered
            secret (:func:`trioprobe._scrub.scrub`) when the result is made.
        timeout: the failure was the probe's deadline running out.
        extras: values accumulated like the counters (numbers are summed, Maps merged,
            Distributions combined), e.g. ``{"resp-code": Map("code", {"200": 1})}``.
        gauges: current readings where only the latest matters, e.g. ``{"srtt": 0.0012}``; a
            ``Map`` is a labelled gauge (the script type's ``step_duration{step}``).
        start_lateness: seconds between the probe's scheduled tick and its actual start; more
            than a millisecond or two means the process itself (not the target) was slow.
        failure: why it failed, classified (:class:`~trioprobe.failures.Failure`: a reason from
            one enum shared by every probe type, and the phase); ``None`` on success. A failed
            result made without one gets ``timeout`` (``connect_timeout`` in the connect phase;
            if ``timeout`` is set) or ``other``, in the phase the probe last entered, so every
            failure has a reason. A ``timeout`` or ``connect_timeout`` failure sets ``timeout``
            too, so the two never disagree.
    """

    target: str
    success: bool
    latency: float = 0.0
    timestamp: float = attrs.field(kw_only=True, factory=time.time)
    error: str | None = attrs.field(kw_only=True, default=None, converter=_scrub_error)
    timeout: bool = attrs.field(kw_only=True, default=False)
    extras: Mapping[str, int | float | str | Value] = attrs.field(
        kw_only=True, factory=dict, converter=_freeze
    )
    gauges: Mapping[str, int | float | str | Map] = attrs.field(
        kw_only=True, factory=dict, converter=_freeze
    )
    start_lateness: float = attrs.field(kw_only=True, default=0.0)
    failure: Failure | None = attrs.field(kw_only=True, default=None)

    def __attrs_post_init__(self) -> None:
        # Frozen, so the derived values are set through object.__setattr__ (attrs' documented way).
        if self.success:
            if self.failure is not None:
                object.__setattr__(self, "failure", None)
            return
        if self.failure is None:
            failure = timed_out() if self.timeout else Failure(FailureReason.OTHER, current_phase())
            object.__setattr__(self, "failure", failure)
        elif self.failure.reason in _DEADLINES and not self.timeout:
            object.__setattr__(self, "timeout", True)

    @property
    def reason(self) -> FailureReason | None:
        """The failure's reason, or ``None`` on success (a shortcut for displays)."""
        return None if self.failure is None else self.failure.reason

    @property
    def phase(self) -> Phase | None:
        """The failure's phase, or ``None`` on success."""
        return None if self.failure is None else self.failure.phase

    def metrics(
        self, *, latency_unit: float = 1.0, latency_distribution: Distribution | None = None
    ) -> EventMetrics:
        """A fresh CUMULATIVE ``EventMetrics``: ``total``, ``success``, ``timeouts``, ``latency``,
        ``failures`` (a map by ``reason/phase``, only on failure) and the extras.

        ``latency`` is the sum of successful latencies in ``latency_unit`` (seconds per unit;
        seconds by default, the base unit every surfacer exports), or, when
        ``latency_distribution`` is given, a clone of it with this latency added as a sample.
        Fresh every call, because the first result a keeper sees becomes its accumulator.
        """
        em = EventMetrics(Kind.CUMULATIVE, self.timestamp)
        em.add_metric("total", Int(1))
        em.add_metric("success", Int(1 if self.success else 0))
        em.add_metric("timeouts", Int(1 if self.timeout else 0))
        scaled = self.latency / latency_unit
        if latency_distribution is not None:
            dist = latency_distribution.clone()
            if self.success:
                dist.add_sample(scaled)
            em.add_metric("latency", dist)
        else:
            em.add_metric("latency", Float(scaled if self.success else 0.0))
        if self.failure is not None:
            em.add_metric("failures", Map(FAILURES_MAP, {self.failure.key: 1}))
        for name, value in self.extras.items():
            em.add_metric(name, as_value(value))
        return em

    def accumulate(
        self,
        acc: EventMetrics,
        *,
        latency_unit: float = 1.0,
        latency_distribution: Distribution | None = None,
    ) -> None:
        """Fold this result into ``acc``: the same as ``acc.update(self.metrics(...))``.

        The stats keeper does this for every result, so the common case (an accumulator that
        already has the four standard values and a result without extras) adds in place instead of
        building an ``EventMetrics`` to throw away; that is most of a keeper's per-result cost.
        Anything else takes the general path, with its checks.
        """
        if (
            acc.kind is Kind.CUMULATIVE
            and (not self.extras or _extras_fit(acc, self.extras))
            and (self.failure is None or _failures_fit(acc))
        ):
            total = acc.metric("total")
            success = acc.metric("success")
            timeouts = acc.metric("timeouts")
            latency = acc.metric("latency")
            if type(total) is Int and type(success) is Int and type(timeouts) is Int:
                if latency_distribution is None and type(latency) is Float:
                    total.value += 1
                    if self.success:
                        success.value += 1
                        latency.value += self.latency / latency_unit
                    if self.timeout:
                        timeouts.value += 1
                    self._add_failure(acc)
                    _add_extras(acc, self.extras)
                    return
                if (
                    latency_distribution is not None
                    and latency_distribution.count == 0
                    and type(latency) is Distribution
                    and latency.lower_bounds == latency_distribution.lower_bounds
                ):
                    total.value += 1
                    if self.success:
                        success.value += 1
                        latency.add_sample(self.latency / latency_unit)
                    if self.timeout:
                        timeouts.value += 1
                    self._add_failure(acc)
                    _add_extras(acc, self.extras)
                    return
        acc.update(
            self.metrics(latency_unit=latency_unit, latency_distribution=latency_distribution)
        )

    def _add_failure(self, acc: EventMetrics) -> None:
        if self.failure is not None:
            failures = acc.metric("failures")
            assert isinstance(failures, Map)
            failures.increment(self.failure.key)

    def gauge_metrics(self) -> EventMetrics | None:
        """The gauges as a GAUGE ``EventMetrics``, or ``None`` if there are none."""
        if not self.gauges:
            return None
        em = EventMetrics(Kind.GAUGE, self.timestamp)
        for name, value in self.gauges.items():
            em.add_metric(name, as_value(value))
        return em


# Reasons that are a deadline running out: a result with one counts in ``timeouts`` too.
_DEADLINES = frozenset({FailureReason.TIMEOUT, FailureReason.CONNECT_TIMEOUT})


def _failures_fit(acc: EventMetrics) -> bool:
    failures = acc.metric("failures")
    return type(failures) is Map and failures.name == FAILURES_MAP


def _extras_fit(acc: EventMetrics, extras: Mapping[str, int | float | str | Value]) -> bool:
    """Whether every extra can be added in place to the metric of that name in ``acc``."""
    for name, value in extras.items():
        mine = acc.metric(name)
        kind = type(value)
        if isinstance(value, Map):
            if type(mine) is not Map or mine.name != value.name:
                return False
        elif isinstance(value, Distribution):
            if type(mine) is not Distribution or (
                mine.lower_bounds is not value.lower_bounds
                and mine.lower_bounds != value.lower_bounds
            ):
                return False
        elif kind is int or kind is Int:
            if type(mine) is not Int:
                return False
        elif kind is float or kind is Float:
            if type(mine) is not Float:
                return False
        else:
            return False
    return True


def _add_extras(acc: EventMetrics, extras: Mapping[str, int | float | str | Value]) -> None:
    """Add extras that passed :func:`_extras_fit`; nothing here can fail part-way."""
    for name, value in extras.items():
        mine = acc.metric(name)
        if isinstance(value, Map):
            assert isinstance(mine, Map)
            counts = mine.values
            for key, number in value.values.items():
                if key in counts:
                    counts[key] += number
                else:
                    mine.increment(key, number)
        elif isinstance(value, Distribution):
            assert isinstance(mine, Distribution)
            buckets = mine.bucket_counts
            for index, number in enumerate(value.bucket_counts):
                if number:
                    buckets[index] += number
            mine.sum += value.sum
            mine.count += value.count
        elif isinstance(value, (int, float)):
            assert isinstance(mine, (Int, Float))
            mine.value += value
        else:
            assert isinstance(mine, (Int, Float))
            assert isinstance(value, (Int, Float))
            mine.value += value.value
