"""Live reload: what changed between two configs, and what a reload tells its operator.

The runner applies a :class:`ReloadPlan` (see :meth:`trioprobe.runner.Runner.reload`): probes
and surfacers whose spec is unchanged keep running untouched; changed ones are stopped and
started again under their own cancel scopes (a changed probe keeps the counters of the targets
it still has); removed ones stop after their final export; added ones start. Every trigger
(SIGHUP, ``POST /-/reload``, ``[reload] watch = true``) goes through the same path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import attrs

from .config import Config
from .metrics import EventMetrics, Float, Int, Kind, Map
from .specs import ProbeSpec, SurfacerSpec

__all__ = ["ReloadOutcome", "ReloadPlan", "ReloadStats", "plan_reload"]


@attrs.frozen
class ReloadPlan:
    """Probe names by fate, and surfacer indexes (old config's, new config's) by fate."""

    unchanged: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    added: tuple[str, ...]
    #: Indexes into the old config's surfacers that stop, and the new config's that start.
    surfacers_removed: tuple[int, ...]
    surfacers_added: tuple[int, ...]
    #: old index -> new index of each surfacer kept running.
    surfacers_kept: tuple[tuple[int, int], ...]
    alerts_changed: bool

    def describe(self, new: Config) -> str:
        """One line: what this reload changes (``trioprobe run`` prints it)."""
        parts = [f"probe {n!r} changed (restarted)" for n in self.changed]
        parts += [f"probe {n!r} removed" for n in self.removed]
        parts += [f"probe {n!r} added" for n in self.added]
        if self.surfacers_removed or self.surfacers_added:
            parts.append(
                f"{len(self.surfacers_removed)} surfacer(s) stopped, "
                f"{len(self.surfacers_added)} started"
            )
        if self.alerts_changed:
            parts.append("alerts changed")
        kept = len(self.unchanged)
        if not parts:
            return f"no changes ({kept} probe(s) running untouched)"
        return f"{', '.join(parts)}; {kept} probe(s) untouched"


def _probe_key(spec: ProbeSpec, options: Any) -> tuple[ProbeSpec, Any]:
    return (spec, options)


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Compare two validated configs (probes by name; surfacers by their whole spec)."""
    before = {spec.name: (spec, options) for spec, options in old.probes}
    after = {spec.name: (spec, options) for spec, options in new.probes}
    paths_moved = old.base_dir != new.base_dir
    unchanged: list[str] = []
    changed: list[str] = []
    for name in after:
        if name not in before:
            continue
        same = _probe_key(*before[name]) == _probe_key(*after[name])
        (unchanged if same and not paths_moved else changed).append(name)
    removed = tuple(n for n in before if n not in after)
    added = tuple(n for n in after if n not in before)
    kept, surfacers_removed, surfacers_added = _match_surfacers(old.surfacers, new.surfacers)
    return ReloadPlan(
        unchanged=tuple(unchanged),
        changed=tuple(changed),
        removed=removed,
        added=added,
        surfacers_removed=surfacers_removed,
        surfacers_added=surfacers_added,
        surfacers_kept=kept,
        alerts_changed=(old.alerts, old.status, old.maintenance)
        != (new.alerts, new.status, new.maintenance),
    )


def _match_surfacers(
    old: Sequence[tuple[SurfacerSpec, Any]], new: Sequence[tuple[SurfacerSpec, Any]]
) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...], tuple[int, ...]]:
    free = list(range(len(old)))
    kept = []
    added = []
    for j, entry in enumerate(new):
        match = next((i for i in free if old[i] == entry), None)
        if match is None:
            added.append(j)
        else:
            free.remove(match)
            kept.append((match, j))
    return tuple(kept), tuple(free), tuple(added)


@attrs.frozen
class ReloadOutcome:
    """What one reload did: ``ok``, and the line ``trioprobe run`` prints."""

    ok: bool
    message: str


class ReloadStats:
    """``config_reloads_total{result}``, ``config_last_reload_successful`` and
    ``config_last_reload_success_timestamp_seconds``: a collector the runner exports."""

    def __init__(self) -> None:
        self.results = Map("result", {"success": 0, "failure": 0})
        self.last_successful = 1
        self.last_success_time = time.time()

    def record(self, outcome: ReloadOutcome) -> None:
        self.results.increment("success" if outcome.ok else "failure")
        self.last_successful = 1 if outcome.ok else 0
        if outcome.ok:
            self.last_success_time = time.time()

    def collect(self) -> list[EventMetrics]:
        counter = EventMetrics(Kind.CUMULATIVE).add_label("ptype", "runner")
        counter.add_metric("config_reloads", Map("result", dict(self.results.values)))
        gauge = EventMetrics(Kind.GAUGE).add_label("ptype", "runner")
        gauge.add_metric("config_last_reload_successful", Int(self.last_successful))
        gauge.add_metric(
            "config_last_reload_success_timestamp_seconds", Float(self.last_success_time)
        )
        return [counter, gauge]
