"""The ``[[alert]]`` and ``[[maintenance]]`` tables, checked against the probes they name.

Alerts and maintenance windows are the config's notification policy: each refers to probes by
name (``probes``, ``depends_on``), so they are checked after the probe tables, here, with the
rules :mod:`trioprobe.alerting` applies at run time (templates, cron, dependencies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..specs import AlertSpec, MaintenanceSpec
from ..validators import check_numbers
from ._tables import known_durations, resolve_paths, structure


def parse_alerts(
    raw: Any, probe_names: set[str], base_dir: Path, errors: list[str]
) -> tuple[AlertSpec, ...]:
    if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
        errors.append("alert: expected an array of tables ([[alert]])")
        return ()
    alerts: list[AlertSpec] = []
    claimed: dict[str, str] = {}
    catch_all: str | None = None
    for i, table in enumerate(raw):
        path = f"alert[{i}]"
        table, quiet = known_durations(table, AlertSpec, path, errors)
        spec = structure(table, AlertSpec, f"$.{path}", errors, quiet)
        if spec is None:
            continue
        before = len(errors)
        _check_alert(spec, path, errors)
        if spec.name in {a.name for a in alerts}:
            errors.append(f"{path}.name: duplicate alert name {spec.name!r}")
        for probe in spec.probes:
            if probe not in probe_names:
                errors.append(f"{path}.probes: no probe named {probe!r}")
            elif probe in claimed:
                errors.append(
                    f"{path}.probes: probe {probe!r} already has alert {claimed[probe]!r}"
                )
            claimed[probe] = spec.name
        if not spec.probes:
            if catch_all is not None:
                errors.append(f"{path}.probes: only one alert may leave `probes` empty")
            catch_all = spec.name
        if len(errors) == before:
            alerts.append(resolve_paths(spec, base_dir))
    return tuple(alerts)


def _check_alert(spec: AlertSpec, path: str, errors: list[str]) -> None:
    if not spec.name:
        errors.append(f"{path}.name: must not be empty")
    if spec.failure_threshold < 0 or spec.success_threshold < 1:
        errors.append(f"{path}: expected failure_threshold >= 0 and success_threshold >= 1")
    if spec.total < 0 or not (0 <= spec.failures <= spec.total):
        errors.append(
            f"{path}: expected 0 <= failures <= total (the window), got "
            f"failures={spec.failures} total={spec.total}"
        )
    elif spec.total and spec.failures < 1:
        errors.append(f"{path}.failures: expected >= 1 when total is set")
    if spec.failure_threshold == 0 and spec.total == 0 and spec.burn_rate_above is None:
        errors.append(
            f"{path}: no down condition: set failure_threshold, failures/total or burn_rate_above"
        )
    if spec.quorum < 1:
        errors.append(f"{path}.quorum: expected >= 1, got {spec.quorum}")
    if spec.failure_threshold == 0 and spec.total == 0:
        errors.append(f"{path}: no down condition: set failure_threshold, or failures/total")
    errors.extend(check_numbers(spec, path))
    if spec.webhook and not spec.webhook.startswith(("http://", "https://")):
        errors.append(f"{path}.webhook: expected an http:// or https:// URL, got {spec.webhook!r}")
    if spec.alertmanager and not spec.alertmanager.startswith(("http://", "https://")):
        errors.append(
            f"{path}.alertmanager: expected Alertmanager's http:// or https:// base URL "
            f"(e.g. http://127.0.0.1:9093), got {spec.alertmanager!r}"
        )
    if not spec.severity:
        errors.append(f"{path}.severity: must not be empty")
    if spec.command and not spec.command[0]:
        errors.append(f"{path}.command: the program (first element) must not be empty")
    from ..alerting.notify import check_template  # here: alerting imports this module

    for arg in spec.command:
        try:
            check_template(arg)
        except ValueError as exc:
            errors.append(f"{path}.command: {exc}")


def parse_maintenance(
    raw: object, probes: set[str], errors: list[str]
) -> tuple[MaintenanceSpec, ...]:
    from ..alerting.maintenance import MAX_RECURRING_DURATION, Cron, parse_time

    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        errors.append("maintenance: expected an array of tables ([[maintenance]])")
        return ()
    out = []
    for i, table in enumerate(raw):
        path = f"maintenance[{i}]"
        table, quiet = known_durations(table, MaintenanceSpec, path, errors)
        spec = structure(table, MaintenanceSpec, f"$.{path}", errors, quiet)
        if spec is None:
            continue
        problems = []
        if bool(spec.start and spec.end) == bool(spec.cron):
            problems.append(f"{path}: give either start and end, or cron and duration")
        for key in ("start", "end"):
            try:
                if getattr(spec, key):
                    parse_time(getattr(spec, key))
            except ValueError as exc:
                problems.append(f"{path}.{key}: {exc}")
        if (
            spec.start
            and spec.end
            and not problems
            and parse_time(spec.end) <= parse_time(spec.start)
        ):
            problems.append(f"{path}.end: must be after start")
        if spec.cron:
            try:
                Cron.parse(spec.cron)
            except ValueError as exc:
                problems.append(f"{path}.cron: {exc}")
            if not 0 < spec.duration <= MAX_RECURRING_DURATION:
                problems.append(
                    f"{path}.duration: expected > 0 and <= {MAX_RECURRING_DURATION:g} s with cron"
                )
        problems += [f"{path}.probes: unknown probe {p!r}" for p in spec.probes if p not in probes]
        errors.extend(problems)
        if not problems:
            out.append(spec)
    return tuple(out)


def check_depends_on(spec: AlertSpec, path: str, probes: set[str]) -> list[str]:
    from ..alerting.depends import parse_dependency

    errors = []
    for item in spec.depends_on:
        try:
            probe, _ = parse_dependency(item, probes)
        except ValueError as exc:
            errors.append(f"{path}.depends_on: {exc}")
            continue
        if probe in spec.probes:
            errors.append(
                f"{path}.depends_on: {item!r} is a probe this alert watches (a target cannot "
                "depend on its own probe)"
            )
    return errors
