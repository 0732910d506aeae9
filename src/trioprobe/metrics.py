"""The metrics model: ``EventMetrics`` and the values it carries.

This follows cloudprober's model, because it is the unit the stats keeper accumulates and every
surfacer understands: an ``EventMetrics`` is a timestamped, labelled, ordered set of named values of
one :class:`Kind`. CUMULATIVE metrics only grow (a probe's ``total``, ``success``, summed
``latency``); GAUGE metrics are a current reading (a smoothed RTT). Accumulating is ``update()``;
turning two cumulative snapshots into a rate is ``subtract_last()``.

Values are small mutable objects (``Int``, ``Float``, ``String``, ``Map``, ``Distribution``) with
the same four operations: ``clone()``, ``add(other)``, ``subtract(prev)`` and ``is_reset(prev)``.
Mixing types is an error (:class:`MetricsError`), never a silent coercion.

Text form (one line, readable back with :meth:`EventMetrics.parse`)::

    1700000000.5 labels=ptype=http,probe=web,dst=a total=10 latency=1234.5 resp-code=map:code,200:10

It is cloudprober's ``String()`` form with two deliberate changes so that it round-trips exactly:
floats are printed in Python's shortest exact form (cloudprober rounds to 3 decimals), and label
values containing separators are JSON-quoted.
"""

from __future__ import annotations

import enum
import json
import math
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any, Self, TypeAlias

import attrs

from ._histogram import Distribution, MetricsError, _check_same_type, _format_number

__all__ = [
    "Kind",
    "MetricsError",
    "Int",
    "Float",
    "String",
    "Map",
    "Distribution",
    "Value",
    "EventMetrics",
]


class Kind(enum.Enum):
    """Whether values accumulate (CUMULATIVE, added on update) or are readings (GAUGE, replaced)."""

    CUMULATIVE = 0
    GAUGE = 1


def _parse_number(text: str) -> int | float:
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        raise MetricsError(f"not a number: {text!r}") from None


@attrs.define
class Int:
    """An integer count."""

    value: int = 0

    def clone(self) -> Int:
        return Int(self.value)

    def add(self, other: Value) -> None:
        _check_same_type(self, other)
        assert isinstance(other, Int)
        self.value += other.value

    def subtract(self, prev: Value) -> Int:
        _check_same_type(self, prev)
        assert isinstance(prev, Int)
        return Int(self.value - prev.value)

    def is_reset(self, prev: Value) -> bool:
        return isinstance(prev, Int) and self.value < prev.value

    def __str__(self) -> str:
        return str(self.value)


@attrs.define
class Float:
    """A floating-point quantity (a latency sum, a reading)."""

    value: float = 0.0

    def clone(self) -> Float:
        return Float(self.value)

    def add(self, other: Value) -> None:
        _check_same_type(self, other)
        assert isinstance(other, Float)
        self.value += other.value

    def subtract(self, prev: Value) -> Float:
        _check_same_type(self, prev)
        assert isinstance(prev, Float)
        return Float(self.value - prev.value)

    def is_reset(self, prev: Value) -> bool:
        return isinstance(prev, Float) and self.value < prev.value

    def __str__(self) -> str:
        return repr(float(self.value))


@attrs.define
class String:
    """A text value (a version, a node name). Strings are replaced, never added."""

    value: str = ""

    def clone(self) -> String:
        return String(self.value)

    def add(self, other: Value) -> None:
        raise MetricsError("string values cannot be added; use a GAUGE to replace them")

    def subtract(self, prev: Value) -> String:
        return self.clone()

    def is_reset(self, prev: Value) -> bool:
        return False

    def __str__(self) -> str:
        return json.dumps(self.value)


def _sorted_values(values: Mapping[str, int | float] | None) -> dict[str, int | float]:
    # None is accepted, as documented for Map(name, values=None); keys are kept sorted.
    return dict(sorted((values or {}).items()))


@attrs.define
class Map:
    """Numbers keyed by string, e.g. response codes: ``Map("code", {"200": 5, "503": 1})``.

    ``name`` is what the key means; Prometheus exports one series per key with ``name`` as the
    label. Keys are kept in sorted order so the text form is stable.
    """

    name: str
    values: dict[str, int | float] = attrs.field(factory=dict, converter=_sorted_values)

    def increment(self, key: str, by: int | float = 1) -> None:
        if key not in self.values:
            self.values[key] = by
            self.values = dict(self.values)  # the converter puts the new key in order
        else:
            self.values[key] += by

    @property
    def total(self) -> int | float:
        return sum(self.values.values())

    def clone(self) -> Map:
        return Map(self.name, dict(self.values))

    def add(self, other: Value) -> None:
        _check_same_type(self, other)
        assert isinstance(other, Map)
        if other.name != self.name:
            raise MetricsError(f"cannot add map {other.name!r} to map {self.name!r}")
        for key, value in other.values.items():
            self.increment(key, value)

    def subtract(self, prev: Value) -> Map:
        _check_same_type(self, prev)
        assert isinstance(prev, Map)
        return Map(self.name, {k: v - prev.values.get(k, 0) for k, v in self.values.items()})

    def is_reset(self, prev: Value) -> bool:
        if not isinstance(prev, Map):
            return False
        return self.total < prev.total or any(k not in self.values for k in prev.values)

    def __str__(self) -> str:
        items = "".join(f",{k}:{_format_number(v)}" for k, v in self.values.items())
        return f"map:{self.name}{items}"


#: What one metric of an ``EventMetrics`` holds.
Value: TypeAlias = Int | Float | String | Map | Distribution


def parse_value(text: str) -> Value:
    """Read back one value in the text form ``str(value)`` produces."""
    if text.startswith("map:"):
        name, *items = text[4:].split(",")
        values: dict[str, int | float] = {}
        for item in items:
            key, sep, number = item.rpartition(":")
            if not sep:
                raise MetricsError(f"map item without ':' in {text!r}")
            values[key] = _parse_number(number)
        return Map(name, values)
    if text.startswith("dist:"):
        fields = dict(part.split(":", 1) for part in text[5:].split("|") if ":" in part)
        try:
            bounds = tuple(-math.inf if b == "-Inf" else float(b) for b in fields["lb"].split(","))
            counts = [int(n) for n in fields["bc"].split(",")]
            return Distribution(bounds, counts, float(fields["sum"]), int(fields["count"]))
        except (KeyError, ValueError) as exc:
            raise MetricsError(f"malformed distribution {text!r}: {exc}") from None
    if text.startswith('"'):
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError:
            raise MetricsError(f"malformed string value {text!r}") from None
        return String(str(decoded))
    parsed = _parse_number(text)
    return Int(parsed) if isinstance(parsed, int) else Float(parsed)


_PLAIN_LABEL_VALUE = re.compile(r'[^\s,="]+')
# A token is a run of non-space characters, or a JSON string (which may hold spaces).
_TOKEN = re.compile(r'(?:[^\s"]|"(?:[^"\\]|\\.)*")+')


def _format_label_value(value: str) -> str:
    return value if _PLAIN_LABEL_VALUE.fullmatch(value) else json.dumps(value)


def _split_labels(text: str) -> Iterator[tuple[str, str]]:
    pos = 0
    while pos < len(text):
        key, sep, _ = text[pos:].partition("=")
        if not sep:
            raise MetricsError(f"label without '=' in {text!r}")
        pos += len(key) + 1
        if text[pos : pos + 1] == '"':
            decoder = json.JSONDecoder()
            try:
                value, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                raise MetricsError(f"malformed quoted label value in {text!r}") from None
            pos = end
        else:
            end = text.find(",", pos)
            end = len(text) if end < 0 else end
            value, pos = text[pos:end], end
        yield key, str(value)
        if text[pos : pos + 1] == ",":
            pos += 1


class EventMetrics:
    """A timestamped set of named values with ordered labels, all of one :class:`Kind`.

    ``add_metric`` and ``add_label`` keep the first value given for a name (later ones are ignored,
    as in cloudprober), so a label fixed at the first export never changes under a series. Both
    return ``self`` to allow chaining.

    A clone shares its original's labels until either adds one (copy on write): a keeper's
    accumulator and the clones it exports every tick (held by surfacers, batches in flight)
    then hold one label dict per target between them, not one each (issue 19, memory per
    target).
    """

    __slots__ = ("_labels", "_metrics", "_shared", "kind", "timestamp")

    def __init__(self, kind: Kind = Kind.CUMULATIVE, timestamp: float | None = None) -> None:
        self.kind = kind
        self.timestamp = time.time() if timestamp is None else timestamp
        self._metrics: dict[str, Value] = {}
        self._labels: dict[str, str] = {}
        # Whether _labels may be another EventMetrics' too (then copied before any change).
        self._shared = False

    # -- building and reading -------------------------------------------------------------
    def add_metric(self, name: str, value: Value) -> Self:
        self._metrics.setdefault(name, value)
        return self

    def add_label(self, key: str, value: str) -> Self:
        if key not in self._labels:
            if self._shared:
                self._labels, self._shared = dict(self._labels), False
            self._labels[key] = value
        return self

    def metric(self, name: str) -> Value | None:
        return self._metrics.get(name)

    def set_labels(self, labels: Mapping[str, str]) -> Self:
        """Replace every label (a target whose discovery labels changed is relabelled)."""
        self._labels, self._shared = dict(labels), False
        return self

    def share_labels(self, other: EventMetrics) -> Self:
        """Take ``other``'s labels, shared until either changes them (copy on write): a
        target's two accumulators (counters and gauges) then hold one label dict."""
        self._labels = other._labels
        self._shared = other._shared = True
        return self

    def label(self, key: str) -> str:
        return self._labels.get(key, "")

    @property
    def metrics(self) -> Mapping[str, Value]:
        """The values in insertion order (a read-only view)."""
        return self._metrics

    @property
    def labels(self) -> Mapping[str, str]:
        """The labels in insertion order (a read-only view)."""
        return self._labels

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventMetrics):
            return NotImplemented
        return (
            self.kind == other.kind
            and self.timestamp == other.timestamp
            and list(self._labels.items()) == list(other._labels.items())
            and list(self._metrics.items()) == list(other._metrics.items())
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"EventMetrics({self.kind.name}, {self})"

    # -- combining ------------------------------------------------------------------------
    def clone(self) -> EventMetrics:
        copy = EventMetrics(self.kind, self.timestamp)
        copy._metrics = {name: value.clone() for name, value in self._metrics.items()}
        copy._labels = self._labels
        copy._shared = self._shared = True
        return copy

    def update(self, other: EventMetrics) -> None:
        """Fold ``other`` in: GAUGE values replace ours, CUMULATIVE values are added.

        All values are checked before any is changed, so a mismatch leaves ``self`` untouched
        (cloudprober stops part-way). A metric we do not have yet is added (cloudprober rejects
        it), so results may carry optional extras.
        """
        if other.kind != self.kind:
            raise MetricsError(
                f"cannot update {self.kind.name} metrics with {other.kind.name} metrics"
            )
        if self.kind is Kind.GAUGE:
            for name, value in other._metrics.items():
                self._metrics[name] = value.clone()
            return
        for name, value in other._metrics.items():
            mine = self._metrics.get(name)
            if mine is not None:
                if type(mine) is not type(value):
                    raise MetricsError(
                        f"metric {name!r}: cannot add {type(value).__name__} "
                        f"to {type(mine).__name__}"
                    )
                if isinstance(mine, String):
                    raise MetricsError(f"metric {name!r}: string values cannot be accumulated")
                if isinstance(mine, Distribution) and isinstance(value, Distribution):
                    mine._check_bounds(value)
                if isinstance(mine, Map) and isinstance(value, Map) and mine.name != value.name:
                    raise MetricsError(f"metric {name!r}: map {value.name!r} is not {mine.name!r}")
        for name, value in other._metrics.items():
            mine = self._metrics.get(name)
            if mine is None:
                self._metrics[name] = value.clone()
            else:
                mine.add(value)

    def subtract_last(self, prev: EventMetrics) -> EventMetrics:
        """The change since ``prev`` (both CUMULATIVE) as a GAUGE.

        If any value went backwards (the source restarted and its counters reset), the current
        values are returned as they are: a delta across a reset would be meaningless or negative.
        """
        if self.kind is not Kind.CUMULATIVE or prev.kind is not Kind.CUMULATIVE:
            raise MetricsError("subtract_last needs two CUMULATIVE metrics")
        result = EventMetrics(Kind.GAUGE, self.timestamp)
        result._labels = dict(self._labels)
        reset = any(
            name in prev._metrics and value.is_reset(prev._metrics[name])
            for name, value in self._metrics.items()
        )
        for name, value in self._metrics.items():
            before = prev._metrics.get(name)
            result._metrics[name] = (
                value.clone() if reset or before is None else value.subtract(before)
            )
        return result

    # -- text and JSON forms --------------------------------------------------------------
    def __str__(self) -> str:
        parts = [_format_number(self.timestamp)]
        if self._labels:
            labels = ",".join(f"{k}={_format_label_value(v)}" for k, v in self._labels.items())
            parts.append(f"labels={labels}")
        parts.extend(f"{name}={value}" for name, value in self._metrics.items())
        return " ".join(parts)

    @classmethod
    def parse(cls, text: str, kind: Kind = Kind.CUMULATIVE) -> EventMetrics:
        """Read the one-line text form back. The kind is not part of the line, so pass it."""
        tokens = _TOKEN.findall(text.strip())
        if not tokens:
            raise MetricsError("empty metrics line")
        try:
            timestamp = float(tokens[0])
        except ValueError:
            raise MetricsError(f"line does not start with a timestamp: {text!r}") from None
        em = cls(kind, timestamp)
        rest = tokens[1:]
        if rest and rest[0].startswith("labels="):
            for key, value in _split_labels(rest[0][len("labels=") :]):
                em.add_label(key, value)
            rest = rest[1:]
        for token in rest:
            name, sep, value = token.partition("=")
            if not sep or not name:
                raise MetricsError(f"expected name=value, got {token!r}")
            em.add_metric(name, parse_value(value))
        return em

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict that keeps everything, the kind included."""
        return {
            "timestamp": self.timestamp,
            "kind": self.kind.name,
            "labels": dict(self._labels),
            "metrics": {name: _value_to_json(v) for name, v in self._metrics.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EventMetrics:
        try:
            em = cls(Kind[data["kind"]], float(data["timestamp"]))
            for key, value in data["labels"].items():
                em.add_label(str(key), str(value))
            for name, value in data["metrics"].items():
                em.add_metric(str(name), _value_from_json(value))
        except (KeyError, TypeError, ValueError) as exc:
            raise MetricsError(f"malformed metrics JSON: {exc!r}") from None
        return em


def _value_to_json(value: Value) -> Any:
    if isinstance(value, Int | Float | String):
        return value.value
    if isinstance(value, Map):
        return {"map": value.name, "values": dict(value.values)}
    return {
        "dist": {
            "lower_bounds": [None if b == -math.inf else b for b in value.lower_bounds],
            "bucket_counts": list(value.bucket_counts),
            "sum": value.sum,
            "count": value.count,
        }
    }


def _value_from_json(data: Any) -> Value:
    if isinstance(data, bool):
        raise TypeError("booleans are not metric values")
    if isinstance(data, int):
        return Int(data)
    if isinstance(data, float):
        return Float(data)
    if isinstance(data, str):
        return String(data)
    if isinstance(data, dict) and "map" in data:
        return Map(str(data["map"]), dict(data["values"]))
    if isinstance(data, dict) and "dist" in data:
        d = data["dist"]
        bounds = tuple(-math.inf if b is None else float(b) for b in d["lower_bounds"])
        counts = [int(n) for n in d["bucket_counts"]]
        return Distribution(bounds, counts, float(d["sum"]), int(d["count"]))
    raise TypeError(f"not a metric value: {data!r}")


def as_value(value: int | float | str | Value) -> Value:
    """Wrap a plain number or string in its value type (bool is rejected: it is ambiguous)."""
    if isinstance(value, bool):
        raise MetricsError("booleans are not metric values; use an Int of 0 or 1")
    if isinstance(value, int):
        return Int(value)
    if isinstance(value, float):
        return Float(value)
    if isinstance(value, str):
        return String(value)
    return value.clone()
