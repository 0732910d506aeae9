"""The config's single tables and top-level keys: ``shutdown_grace``, ``[status]``,
``[history]``, ``[reload]``, ``[fleet]``.

Each is one optional table with checks of its own and no reference to the probes, so
:func:`trioprobe.config.parse_config` reads as the list of sections it checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .._durations import parse_duration
from ..fleet.spec import FleetSpec
from ..specs import AlertSpec, HistorySpec, ReloadSpec, StatusSpec
from ..validators import KEY_RANGES, check_numbers
from ._tables import known_durations, resolve_paths, structure


def parse_grace(data: Mapping[str, Any], errors: list[str]) -> float:
    """``shutdown_grace``, in seconds; 5.0 when it is absent or bad (and the error reported)."""
    grace = data.get("shutdown_grace", 5.0)
    if isinstance(grace, str):
        try:
            grace = parse_duration(grace)
        except ValueError as exc:
            errors.append(f"shutdown_grace: {exc}")
            grace = 5.0
    problem = KEY_RANGES["shutdown_grace"].problem(grace)
    if problem is not None:
        errors.append(f"shutdown_grace: {problem}")
        grace = 5.0
    return float(grace)


def parse_status(data: Mapping[str, Any], base_dir: Path, errors: list[str]) -> StatusSpec | None:
    if "status" not in data:
        return None
    raw_status = data["status"]
    quiet: set[str] = set()
    if isinstance(raw_status, Mapping):
        raw_status, quiet = known_durations(raw_status, StatusSpec, "status", errors)
    status: StatusSpec | None = structure(raw_status, StatusSpec, "$.status", errors, quiet)
    if status is not None:
        status = resolve_paths(status, base_dir)
        errors.extend(check_numbers(status, "status"))
        if status.refresh < 1:
            errors.append(f"status.refresh: expected >= 1 second, got {status.refresh}")
    return status


def parse_reload(data: Mapping[str, Any], errors: list[str]) -> ReloadSpec | None:
    if "reload" not in data:
        return None
    reload: ReloadSpec | None = structure(data["reload"], ReloadSpec, "$.reload", errors)
    if reload is not None:
        errors.extend(check_numbers(reload, "reload"))
    return reload


#: The history database's name beside the config file when ``[history]`` names no path.
DEFAULT_HISTORY_FILE = "trioprobe-history.sqlite"


def parse_history(data: Mapping[str, Any], base_dir: Path, errors: list[str]) -> HistorySpec | None:
    if "history" not in data:
        return None
    raw = data["history"]
    quiet: set[str] = set()
    if isinstance(raw, Mapping):
        raw, quiet = known_durations(raw, HistorySpec, "history", errors)
    spec: HistorySpec | None = structure(raw, HistorySpec, "$.history", errors, quiet)
    if spec is None:
        return None
    errors.extend(check_numbers(spec, "history"))
    if not 1 <= spec.rollup <= 3600 or 3600 % spec.rollup:
        errors.append(
            f"history.rollup: expected seconds that divide an hour (60), got {spec.rollup}"
        )
    for key in ("keep_minutes_hours", "keep_hours_days", "keep_days_days"):
        if getattr(spec, key) < 1:
            errors.append(f"history.{key}: expected at least 1, got {getattr(spec, key)}")
    if not spec.enabled:
        return None
    if not spec.path:
        spec = attrs.evolve(spec, path=DEFAULT_HISTORY_FILE)
    resolved: HistorySpec = resolve_paths(spec, base_dir)
    return resolved


def parse_fleet(
    data: Mapping[str, Any], alerts: Sequence[AlertSpec], errors: list[str]
) -> FleetSpec | None:
    fleet = None
    if isinstance(data.get("fleet"), Mapping):
        table, quiet = known_durations(data["fleet"], FleetSpec, "fleet", errors)
        fleet = structure(table, FleetSpec, "$.fleet", errors, quiet)
        if fleet is not None:
            errors.extend(fleet.problems())
    elif "fleet" in data:
        errors.append("fleet: expected a table ([fleet])")
    replicas = fleet.replicas if fleet is not None else 1
    for i, alert in enumerate(alerts):
        if alert.quorum > replicas:
            errors.append(
                f"alert[{i}].quorum: {alert.quorum} votes need as many owners per target; "
                f"set [fleet] replicas >= {alert.quorum} (it is {replicas})"
            )
    return fleet
