"""Why a target's notifications are held now: a dependency is down, or a maintenance window
is open.

The service asks before each fire and repeat (and releases held fires when the answer turns to
none), the status page shows the reason, and history sets aside the results made meanwhile.
The ``depends_on`` and ``[[maintenance]]`` rules behind those answers are kept here, and
replaced whole on a reload.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

import trio

from ..config import Config
from .depends import first_down, parse_dependency
from .health import Health
from .maintenance import Window

__all__ = ["DependencyJudge", "Holds"]

#: The first of an alert's dependencies that is down now, as (probe, target), or ``None``.
DependencyJudge = Callable[[Collection[tuple[str, str | None]]], tuple[str, str] | None]


class Holds:
    """The dependencies and maintenance windows of a config, asked about one target at a time."""

    def __init__(self, health: Health, config: Config) -> None:
        self.health = health
        #: Judges ``depends_on``: this process's own view by default; a fleet agent replaces
        #: it with the fleet's agreed state (it does not probe the dependencies others own).
        self.first_down: DependencyJudge = lambda deps: first_down(health, deps)
        self._epoch: tuple[float, float] | None = None
        self.update(config)

    def update(self, config: Config) -> None:
        """Take the dependencies, windows and probe labels of ``config`` (a reload)."""
        names = {spec.name for spec, _ in config.probes}
        self._depends = {
            a.name: [parse_dependency(d, names) for d in a.depends_on] for a in config.alerts
        }
        self._windows = [Window(m) for m in config.maintenance]
        self._probe_labels = {spec.name: spec.labels for spec, _ in config.probes}

    def start_clock(self) -> None:
        """Tie :meth:`wall_time` to Trio's clock from now (the service's start)."""
        self._epoch = (time.time(), trio.current_time())

    def wall_time(self) -> float:
        """Wall-clock now, advancing with Trio's clock (so windows follow a test's MockClock)."""
        if self._epoch is None:
            return time.time()
        wall, clock = self._epoch
        return wall + trio.current_time() - clock

    def hold_reason(self, alert: str, probe: str, target: str) -> str | None:
        """Why notifications for ``probe``/``target`` are held now: ``"blocked"`` (a
        dependency is down), ``"maintenance"`` (a window is open), or ``None``."""
        return self._held(alert, probe, target, every_window=True)

    def set_aside(self, probe: str, target: str) -> str | None:
        """How history counts a result of ``probe``/``target`` made now: ``"blocked"`` while
        a dependency of its alert is down, ``"maintenance"`` in a window that does not count in
        the SLO (``count_in_slo = false``), else ``None`` (it counts). Called per result: with
        no dependency and no window it is two lookups."""
        return self._held(self.health.rule_for(probe).name, probe, target, every_window=False)

    def _held(self, alert: str, probe: str, target: str, *, every_window: bool) -> str | None:
        # every_window=False: only the windows kept out of the SLO count (history's question).
        deps = self._depends.get(alert)
        if deps and self.first_down(deps) is not None:
            return "blocked"
        if self._windows:
            labels = self._probe_labels.get(probe, {})
            now = self.wall_time()
            for window in self._windows:
                if (
                    (every_window or not window.spec.count_in_slo)
                    and window.covers(probe, target, labels)
                    and window.is_open(now)
                ):
                    return "maintenance"
        return None
