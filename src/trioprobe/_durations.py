"""Durations written the way Prometheus and blackbox_exporter configs write them: ``5s``,
``500ms``, ``1m``, ``1h30m``.

A leaf module (standard library only): the config parser and every CLI flag that takes seconds
use :func:`parse_duration`, so a duration means the same everywhere. Plain numbers (``5``,
``0.5``) stay seconds, as before. Unlike Prometheus, each part may have a fraction (``1.5s``),
as Go's ``time.ParseDuration`` allows: a user converting ``1500ms`` by hand should not be told off.
"""

from __future__ import annotations

import math
import re

__all__ = ["DURATION_EXAMPLE", "parse_duration"]

#: Seconds per unit. ``ms`` before ``m`` in the pattern below, or ``500ms`` reads as 500 minutes.
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "y": 365 * 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d|w|y)")
_PLAIN = re.compile(r"[+]?(\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

#: What a message shows as the accepted forms.
DURATION_EXAMPLE = "a duration such as 5s, 500ms, 1m or 1h30m, or a number of seconds"


def parse_duration(text: str) -> float:
    """The number of seconds ``text`` stands for; ``ValueError`` if it is not a duration.

    Units (largest first, each at most once, as Prometheus requires): ``y`` (365 days), ``w``,
    ``d``, ``h``, ``m``, ``s``, ``ms``, ``us``/``µs``, ``ns``. A bare number is seconds. Non-finite
    values are refused here; ranges (at least 1 ms, not negative...) are the caller's business.
    """
    stripped = text.strip()
    # A sign is kept so that the caller's range check can say "expected >= 0.001, got -5.0".
    sign = -1.0 if stripped.startswith("-") else 1.0
    stripped = stripped.removeprefix("-")
    if _PLAIN.fullmatch(stripped):
        value = sign * float(stripped)
    else:
        value = sign * _parse_units(stripped, text)
    if not math.isfinite(value):
        raise ValueError(f"expected {DURATION_EXAMPLE}, got {text!r}")
    return value


def _parse_units(stripped: str, text: str) -> float:
    position = 0
    total = 0.0
    smallest_so_far = math.inf  # seconds per unit of the previous part
    while position < len(stripped):
        match = _PART.match(stripped, position)
        if match is None:
            raise ValueError(f"expected {DURATION_EXAMPLE}, got {text!r}")
        number, unit = match.groups()
        if _UNITS[unit] >= smallest_so_far:
            raise ValueError(
                f"expected {DURATION_EXAMPLE} (units largest first, each once), got {text!r}"
            )
        smallest_so_far = _UNITS[unit]
        total += float(number) * _UNITS[unit]
        position = match.end()
    if position == 0:
        raise ValueError(f"expected {DURATION_EXAMPLE}, got {text!r}")
    return total
