"""The per-target health state machine: ``unknown`` -> ``up`` / ``down``, result by result.

Two down conditions, either of which is enough (Gatus's thresholds and cloudprober's window):

* ``failure_threshold`` consecutive failures (0 turns this off);
* ``failures`` of the last ``total`` results failed (off while ``total`` is 0).

A down target comes back up after ``success_threshold`` consecutive successes, once the window
condition no longer holds: requiring both keeps a flapping target from bouncing between states on
every result. An unknown target (just started, or just re-added) becomes up after
``success_threshold`` successes too. A success slower than ``max_latency`` counts as a failure.

:class:`TargetHealth` is plain synchronous state with no locking: exactly one task (the probe's
owner) feeds it, so nothing else can interleave.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import attrs

from ..failures import Failure
from ..results import ProbeResult

__all__ = ["DOWN", "UNKNOWN", "UP", "AlertRule", "State", "TargetHealth", "Transition"]

State = Literal["unknown", "up", "down"]  #: A target's health state.
UNKNOWN: State = "unknown"  #: No verdict yet (or the target left the probe's targets).
UP: State = "up"  #: The rule's successes were met.
DOWN: State = "down"  #: The rule's failures were met: the alert fires.
#: Results remembered for the ``failures``/``total`` figures when no window is configured.
_DEFAULT_WINDOW = 10


@attrs.frozen
class AlertRule:
    """When a target counts as down or up (the conditions of an ``[[alert]]`` table)."""

    #: The alert's name ("" for probes no alert names: state is kept, nobody is told).
    name: str = ""
    failure_threshold: int = 3
    success_threshold: int = 2
    failures: int = 0
    total: int = 0
    max_latency: float | None = None
    #: Down while the SLO burn rate over ``burn_rate_window`` is above this (needs history).
    burn_rate_above: float | None = None
    burn_rate_window: str = "1h"

    def __attrs_post_init__(self) -> None:
        if self.failure_threshold < 0 or self.success_threshold < 1:
            raise ValueError("need failure_threshold >= 0 and success_threshold >= 1")
        if self.total < 0 or not 0 <= self.failures <= self.total:
            raise ValueError(f"need 0 <= failures ({self.failures}) <= total ({self.total})")
        if self.failure_threshold == 0 and self.total == 0 and self.burn_rate_above is None:
            raise ValueError(
                "no down condition: set failure_threshold, failures/total or burn_rate_above"
            )

    @property
    def window(self) -> int:
        return self.total or max(_DEFAULT_WINDOW, self.failure_threshold, self.success_threshold)


@attrs.frozen
class Transition:
    """A target changed state.

    Attributes:
        probe, target: which one.
        old, new: the states before and after.
        since: wall-clock time (``time.time()``) of the result that caused the change.
        failures, total: failed results among the last ``total`` (the rule's window).
        error: the last failure's error, if any.
        failure: the last failure's reason for people (``connect_refused``, ``timeout
            (connect)``, ``validation (regex)``; ``latency`` for a success slower than
            ``max_latency``), if any: see :mod:`trioprobe.failures`.
        alert: the alert's name ("" when no alert watches the probe).
        reason: ``"result"``, or ``"removed"`` when the target left the target list.
    """

    probe: str
    target: str
    old: State
    new: State
    since: float
    failures: int
    total: int
    error: str | None
    alert: str = ""
    reason: Literal["result", "removed"] = "result"
    failure: str | None = None

    @property
    def failure_reason(self) -> str | None:
        """The bare reason of :attr:`failure` (``timeout`` of ``timeout (connect)``): a bounded
        word, for a label such as Alertmanager's ``reason``."""
        return None if self.failure is None else self.failure.partition(" (")[0]

    @property
    def fires(self) -> bool:
        return self.new == DOWN

    @property
    def resolves(self) -> bool:
        return self.old == DOWN and self.new != DOWN


class TargetHealth:
    """The state of one probe x target, updated by :meth:`feed`."""

    __slots__ = (
        "_window",
        "burn_rates",
        "consecutive_failures",
        "consecutive_successes",
        "last_error",
        "last_failure",
        "last_reason",
        "probe",
        "rule",
        "since",
        "state",
        "target",
        "transitions",
    )

    def __init__(self, probe: str, target: str, rule: AlertRule, now: float) -> None:
        self.probe = probe
        self.target = target
        self.rule = rule
        self.state: State = UNKNOWN
        #: Wall-clock time the current state began.
        self.since = now
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.last_error: str | None = None
        #: The last failure, classified (None for a success slower than ``max_latency``).
        self.last_failure: Failure | None = None
        #: The last failure's reason for people (``Failure.label``, or ``latency``).
        self.last_reason: str | None = None
        #: Transitions made so far (exported as the ``transitions`` counter).
        self.transitions = 0
        self._window: deque[bool] = deque(maxlen=rule.window)
        #: The latest SLO burn rates by window (``"1h"``, ``"6h"``), set from the history.
        self.burn_rates: dict[str, float | None] = {}

    @property
    def failures(self) -> int:
        """Failed results among the remembered window."""
        return self._window.count(False)

    @property
    def total(self) -> int:
        return len(self._window)

    def failed(self, result: ProbeResult) -> str | None:
        """Why ``result`` counts as a failure for alerting, or ``None`` if it does not."""
        if not result.success:
            return result.error or ("timeout" if result.timeout else "failed")
        limit = self.rule.max_latency
        if limit is not None and result.latency > limit:
            return f"latency {result.latency:.3g} s above max_latency {limit:g} s"
        return None

    def feed(self, result: ProbeResult) -> Transition | None:
        """Fold one result in; the transition it caused, if any."""
        error = self.failed(result)
        ok = error is None
        self._window.append(ok)
        if ok:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
        else:
            self.consecutive_failures += 1
            self.consecutive_successes = 0
            self.last_error = error
            self.last_failure = result.failure
            self.last_reason = "latency" if result.failure is None else result.failure.label
        rule = self.rule
        window_down = (rule.total > 0 and self.failures >= rule.failures) or self.burning
        if self.state != DOWN and (
            window_down
            or (rule.failure_threshold and self.consecutive_failures >= rule.failure_threshold)
        ):
            return self._move(DOWN, result.timestamp)
        if (
            self.state != UP
            and self.consecutive_successes >= rule.success_threshold
            and not window_down
        ):
            return self._move(UP, result.timestamp)
        return None

    @property
    def burning(self) -> bool:
        """The burn-rate condition holds (``burn_rate_above``, from the history's figures)."""
        limit = self.rule.burn_rate_above
        rate = self.burn_rates.get(self.rule.burn_rate_window)
        return limit is not None and rate is not None and rate > limit

    def remove(self, now: float) -> Transition | None:
        """The target left the target list: back to unknown (resolving a firing alert)."""
        if self.state == UNKNOWN:
            return None
        return self._move(UNKNOWN, now, reason="removed")

    def firing(self) -> Transition:
        """The current state as a down -> down transition (what a repeat notice carries)."""
        return self._transition(DOWN, self.since, "result")

    def _move(
        self, new: State, when: float, reason: Literal["result", "removed"] = "result"
    ) -> Transition:
        transition = self._transition(new, when, reason)
        self.state = new
        self.since = when
        self.transitions += 1
        return transition

    def _transition(
        self, new: State, when: float, reason: Literal["result", "removed"]
    ) -> Transition:
        return Transition(
            probe=self.probe,
            target=self.target,
            old=self.state,
            new=new,
            since=when,
            failures=self.failures,
            total=self.total,
            error=self.last_error,
            alert=self.rule.name,
            reason=reason,
            failure=self.last_reason,
        )
