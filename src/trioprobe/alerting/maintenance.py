"""Maintenance windows: when notifications for some targets are held.

A window is a fixed ``start``/``end`` (ISO 8601; without an offset, UTC) or a recurrence: a
five-field cron expression (``minute hour day-of-month month day-of-week``, UTC; ``*``, lists,
ranges and ``/steps``; day-of-week 0-7 with 0 and 7 Sunday) and a ``duration``. Its scope is the
probes, targets and probe labels it names (each empty means any). Probing goes on; only the
notifications are held (see docs/alerting.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import attrs

from ..specs import MaintenanceSpec

__all__ = ["Cron", "Window", "parse_time"]

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 7))  # fmt: skip
#: Longest recurring window (so finding its latest start is a bounded backward scan).
MAX_RECURRING_DURATION = 7 * 24 * 3600.0


def parse_time(text: str) -> float:
    """An ISO 8601 date-time as a Unix time; one without an offset is UTC."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"expected an ISO 8601 date-time such as 2026-12-24T22:00Z, got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, b = base.split("-", 1)
            first, last = int(a), int(b)
        else:
            first = last = int(base)
            if step_text:
                last = high
        if step < 1 or not low <= first <= last <= high:
            raise ValueError(f"{name} {part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


@attrs.frozen
class Cron:
    """A five-field cron expression, in UTC."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        parts = text.split()
        if len(parts) != 5:
            raise ValueError(
                f"expected 5 fields (minute hour day-of-month month day-of-week), got {text!r}"
            )
        try:
            sets = [_field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True)]
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        return cls(
            minutes=sets[0],
            hours=sets[1],
            days=sets[2],
            months=sets[3],
            weekdays=frozenset(d % 7 for d in sets[4]),
            any_day=parts[2] == "*",
            any_weekday=parts[4] == "*",
        )

    def matches(self, when: datetime) -> bool:
        if when.minute not in self.minutes or when.hour not in self.hours:
            return False
        if when.month not in self.months:
            return False
        day = when.day in self.days
        weekday = (when.isoweekday() % 7) in self.weekdays
        # Cron's rule: with both day fields restricted, either one matching is enough.
        if self.any_day or self.any_weekday:
            return day and weekday
        return day or weekday

    def latest_start(self, now: float, within: float) -> float | None:
        """The latest minute at or before ``now`` (and not before ``now - within``) it matches."""
        minute = datetime.fromtimestamp(now, UTC).replace(second=0, microsecond=0)
        for _ in range(int(within // 60) + 1):
            if self.matches(minute):
                return minute.timestamp()
            minute -= timedelta(minutes=1)
        return None


class Window:
    """One ``[[maintenance]]`` table, ready to ask: is this target in maintenance now?"""

    def __init__(self, spec: MaintenanceSpec) -> None:
        self.spec = spec
        self.cron = Cron.parse(spec.cron) if spec.cron else None
        self.start = parse_time(spec.start) if spec.start else None
        self.end = parse_time(spec.end) if spec.end else None
        # The cron scan is per minute: its answer is cached for the minute it was made in.
        self._cached: tuple[int, float | None] | None = None

    def covers(self, probe: str, target: str, labels: Mapping[str, str]) -> bool:
        spec = self.spec
        if spec.probes and probe not in spec.probes:
            return False
        if spec.targets and target not in spec.targets:
            return False
        return all(labels.get(k) == v for k, v in spec.labels.items())

    def is_open(self, now: float) -> bool:
        if self.cron is None:
            start, end = self.start or 0.0, self.end or 0.0
            return start <= now < end
        minute = int(now // 60)
        if self._cached is None or self._cached[0] != minute:
            self._cached = (minute, self.cron.latest_start(now, self.spec.duration))
        latest = self._cached[1]
        return latest is not None and latest <= now < latest + self.spec.duration
