"""The ranges of every number a user gives trioprobe, config key or CLI flag alike.

A NaN passes every ``<``/``>`` check written the obvious way, and an absurd value (a timeout of
-1, a billion latency buckets) is accepted at start and fails later, at run time, with a
traceback. So each number is checked here, once: the config checks every numeric key of every
probe and surfacer with :func:`check_numbers` after structuring it, and the CLI's numeric flags
use a :class:`Range`'s :meth:`~Range.parse` as their argparse ``type``. Both say what was
expected and name the key or flag.

A key's range comes from :data:`KEY_RANGES` by its name (a name means the same in every table),
else from its type: a float is a duration in seconds (:data:`SECONDS`), an int a count >= 0.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "BUCKET_BASE",
    "BUCKET_COUNT",
    "COUNT",
    "KEY_RANGES",
    "MAX_SECONDS",
    "MIN_SECONDS",
    "PORT",
    "POSITIVE_COUNT",
    "SECONDS",
    "SECONDS_OR_ZERO",
    "Range",
    "check_numbers",
    "range_for",
]

#: The longest duration accepted anywhere (one year): longer is a typo, not a plan.
MAX_SECONDS = 365 * 24 * 3600.0
_MAX_INT = 2**63 - 1  # TOML's own limit


@attrs.frozen
class Range:
    """A closed (or left-open) interval of finite numbers, and how to name its members."""

    #: What the number is, for messages: "number of seconds", "an integer", "a port number".
    noun: str
    low: float
    high: float
    #: ``low`` itself is excluded (durations: 0 s is not a timeout).
    low_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        kind = self.noun if self.integer else f"a finite {self.noun}"
        text = f"{kind} {'>' if self.low_open else '>='} {_number(self.low)}"
        if self.high < _MAX_INT:  # a bound TOML itself imposes goes unsaid
            text += f" and <= {_number(self.high)}"
        return text

    def problem(self, value: object) -> str | None:
        """Why ``value`` is out of range (``expected ..., got ...``), or ``None`` if it is fine."""
        ok = (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and (isinstance(value, int) or not self.integer)
            and math.isfinite(value)
            and (value > self.low if self.low_open else value >= self.low)
            and value <= self.high
        )
        return None if ok else f"expected {self.describe()}, got {value!r}"

    def parse(self, text: str) -> Any:
        """An argparse ``type``: the number in ``text`` if it is in range.

        ``argparse.ArgumentTypeError`` makes argparse print ``argument --flag: ...`` and exit 2.
        """
        try:
            value: float = int(text) if self.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}") from None
        problem = self.problem(value)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value


#: The shortest duration accepted (1 ms): below it an interval is a busy loop, and one of 5e-324 s
#: overflows the tick arithmetic (found by the config fuzz test).
MIN_SECONDS = 0.001
SECONDS = Range("number of seconds", MIN_SECONDS, MAX_SECONDS)
SECONDS_OR_ZERO = Range("number of seconds", 0.0, MAX_SECONDS)
COUNT = Range("an integer", 0, _MAX_INT, integer=True)
POSITIVE_COUNT = Range("an integer", 1, _MAX_INT, integer=True)
PORT = Range("a port number", 0, 65535, integer=True)
#: More buckets than this make every export (a line per bucket in Prometheus) absurdly large.
BUCKET_COUNT = Range("an integer", 1, 1000, integer=True)
BUCKET_BASE = Range("number", 1.01, 1e6)
_POSITIVE = Range("number", 0.0, sys.float_info.max, low_open=True)
_NON_NEGATIVE = Range("number", 0.0, sys.float_info.max)

#: Config keys whose range is not their type's default, by name (the same in every table).
KEY_RANGES: Mapping[str, Range] = {
    "shutdown_grace": SECONDS_OR_ZERO,
    "drain_timeout": SECONDS_OR_ZERO,
    # [[alert]]: 0 turns repeated notifications off.
    "repeat_interval": SECONDS_OR_ZERO,
    # [[probe]]: 0 gives each target its own timer.
    "tick_slot": SECONDS_OR_ZERO,
    "port": PORT,
    "buffer": POSITIVE_COUNT,
    "batch_size": POSITIVE_COUNT,
    "retries": POSITIVE_COUNT,
    "max_size": POSITIVE_COUNT,
    "max_segment_size": POSITIVE_COUNT,
    "max_body_bytes": POSITIVE_COUNT,
    "expected_codes": Range("an HTTP status code", 100, 599, integer=True),
    # [probe.latency_buckets]: bounds are in the probe's latency unit, not seconds.
    "count": BUCKET_COUNT,
    "base": BUCKET_BASE,
    "scale": _POSITIVE,
    "bounds": _NON_NEGATIVE,
    # [fleet]: a rendezvous weight, not a duration ("5s" is refused).
    "weight": Range("number", 0.0, 1e6),
}


def range_for(key: str, value: object) -> Range | None:
    """The range of config key ``key`` holding ``value``; ``None`` if it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if key in KEY_RANGES:
        return KEY_RANGES[key]
    return SECONDS if isinstance(value, float) else COUNT


def check_numbers(instance: Any, path: str) -> list[str]:
    """``"<path>.<key>: expected ..., got ..."`` for every out-of-range number in ``instance``.

    ``instance`` is a structured config table (an attrs instance); nested tables and arrays of
    numbers are checked too. Its own cross-key checks (``stats_interval >= interval``) stay
    with its owner.
    """
    errors: list[str] = []
    for field in attrs.fields(type(instance)):
        value = getattr(instance, field.name)
        where = f"{path}.{field.name}"
        if attrs.has(type(value)):
            errors.extend(check_numbers(value, where))
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                errors.extend(_check(field.name, item, f"{where}[{i}]"))
        else:
            errors.extend(_check(field.name, value, where))
    return errors


def _check(key: str, value: object, where: str) -> list[str]:
    bounds = range_for(key, value)
    problem = bounds.problem(value) if bounds is not None else None
    return [] if problem is None else [f"{where}: {problem}"]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e16 else f"{value:g}"
