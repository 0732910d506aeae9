"""The ``[[surfacer]]`` tables, and the one check that spans surfacers and alerts: queue dirs.

A surfacer table is a :class:`~trioprobe.specs.SurfacerSpec` plus its type's ``Options``; what
the surfacers and the alert notifiers share is the handoff queue directory, which only one of
them may open, so that check sits beside the surfacers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ..specs import AlertSpec, SurfacerSpec
from ..surfacers import HasQueueDir, surfacer_types
from ..validators import check_numbers
from ._tables import known_durations, options_class, resolve_paths, split, structure, suggest

_SURFACER_KEYS = frozenset(attrs.fields_dict(SurfacerSpec))


def parse_surfacers(
    raw_surfacers: Any, base_dir: Path, errors: list[str]
) -> list[tuple[SurfacerSpec, Any]]:
    """The ``[[surfacer]]`` tables (none is fine: a run without surfacers still alerts)."""
    surfacers: list[tuple[SurfacerSpec, Any]] = []
    if not isinstance(raw_surfacers, list) or not all(isinstance(s, dict) for s in raw_surfacers):
        errors.append("surfacer: expected an array of tables ([[surfacer]])")
        raw_surfacers = []
    for i, table in enumerate(raw_surfacers):
        surfacer = _parse_surfacer(table, f"surfacer[{i}]", base_dir, errors)
        if surfacer is not None:
            surfacers.append(surfacer)
    return surfacers


def _parse_surfacer(
    table: Mapping[str, Any], path: str, base_dir: Path, errors: list[str]
) -> tuple[SurfacerSpec, Any] | None:
    own, rest = split(table, _SURFACER_KEYS)
    sspec = structure(own, SurfacerSpec, f"$.{path}", errors)
    if sspec is None:
        return None
    if sspec.type not in surfacer_types:
        errors.append(
            f"{path}.type: unknown surfacer type {sspec.type!r}"
            f"{suggest(sspec.type, surfacer_types.names())}"
        )
        return None
    errors.extend(check_numbers(sspec, path))
    options_cls = options_class(surfacer_types, sspec.type, path, errors)
    if options_cls is None:
        return None
    rest, quiet = known_durations(rest, options_cls, path, errors, _SURFACER_KEYS)
    options = structure(rest, options_cls, f"$.{path}", errors, quiet)
    if options is not None:
        errors.extend(check_numbers(options, path))
        options = resolve_paths(options, base_dir)
    return sspec, options


def shared_queue_dirs(
    surfacers: Sequence[tuple[SurfacerSpec, Any]], alerts: Sequence[AlertSpec]
) -> list[str]:
    """A handoff queue directory is locked by whoever opens it first, so two users of one
    directory pass every other check and then fail at start-up: say so here instead."""
    from ..alerting.notify import default_webhook_dir  # here: alerting imports this module
    from ..handoff.disk_queue import default_queue_dir

    users = [
        (f"surfacer[{i}].queue_dir", options.resolved_queue_dir())
        for i, (_, options) in enumerate(surfacers)
        if isinstance(options, HasQueueDir)
    ]
    users += [
        (
            f"alert {spec.name!r}: webhook_queue_dir",
            spec.webhook_queue_dir or default_webhook_dir(spec.name),
        )
        for spec in alerts
        if spec.webhook
    ]
    users += [
        (
            f"alert {spec.name!r}: alertmanager_queue_dir",
            spec.alertmanager_queue_dir or default_queue_dir(f"alert-{spec.name}-alertmanager"),
        )
        for spec in alerts
        if spec.alertmanager
    ]
    first: dict[str, str] = {}
    errors = []
    for where, directory in users:
        key = os.path.normpath(directory)
        if key in first:
            errors.append(
                f"{where}: {directory} is also {first[key]}'s queue; a queue directory has one "
                "user (give each its own queue_dir)"
            )
        else:
            first[key] = where
    return errors
