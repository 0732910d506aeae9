"""The TOML config: probes and surfacers, structured into attrs classes with cattrs.

::

    shutdown_grace = 5.0

    [[probe]]
    name = "web"
    type = "http"
    targets = ["http://127.0.0.1:8080/health"]   # or: targets_file = "targets.txt"
    interval = 2.0
    timeout = 1.0
    expected_codes = [200]                        # type-specific keys sit beside the common ones

    [[surfacer]]
    type = "prometheus"
    port = 9313

Everything is checked before anything starts: unknown keys, wrong types, bad values and a stats
interval shorter than the probe interval raise :class:`ConfigError`, whose message names the file,
the key path (``probe[0].interval``) and what was expected.

This module reads the file and walks the sections in order; each kind of section is checked in
a module of its own (``_probes``, ``_surfacers``, ``_alerts``, ``_sections``), all through the
one table-to-value step of ``_tables``. What a valid config will export is ``_exposition``.
"""

from __future__ import annotations

import errno
import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ..fleet.spec import FleetSpec
from ..specs import (
    DEFAULT_SURFACER_BUFFER,
    AlertSpec,
    HistorySpec,
    LatencyBuckets,
    MaintenanceSpec,
    ProbeSpec,
    ReloadSpec,
    StatusSpec,
    SurfacerSpec,
)
from ..targets import MAX_TARGETS_BYTES, TargetsFile
from ._alerts import check_depends_on, parse_alerts, parse_maintenance
from ._exposition import exposition_warnings
from ._exposition import probe_series as probe_series
from ._probes import parse_probes, targets_file_errors
from ._probes import parse_targets as parse_targets
from ._probes import target_checker as target_checker
from ._sections import (
    DEFAULT_HISTORY_FILE,
    parse_fleet,
    parse_grace,
    parse_history,
    parse_reload,
    parse_status,
)
from ._surfacers import parse_surfacers, shared_queue_dirs
from ._tables import resolve_paths, suggest

__all__ = [
    "DEFAULT_SURFACER_BUFFER",
    "AlertSpec",
    "Config",
    "ConfigError",
    "HistorySpec",
    "MAX_CONFIG_BYTES",
    "MAX_TARGETS_BYTES",
    "LatencyBuckets",
    "ProbeSpec",
    "ReloadSpec",
    "StatusSpec",
    "SurfacerSpec",
    "TargetsFile",
    "exposition_warnings",
    "load_config",
    "parse_config",
    "resolve_paths",
]

logger = logging.getLogger("trioprobe.config")


class ConfigError(ValueError):
    """The config cannot be used; the message says where and why, one problem per line."""


#: The largest config file read; ``check /dev/zero`` must not read until memory runs out.
MAX_CONFIG_BYTES = 1024 * 1024


def read_bounded(path: Path, limit: int) -> str:
    """The UTF-8 text of ``path``, read only up to ``limit`` bytes.

    Raises ``OSError`` (``EFBIG`` if the file is larger, so callers that already handle an
    unreadable file handle this too) or ``UnicodeDecodeError``.
    """
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than the {limit}-byte limit", str(path))
    return data.decode("utf-8")


@attrs.frozen
class Config:
    """A validated config: each probe and surfacer with its type-specific options."""

    probes: tuple[tuple[ProbeSpec, Any], ...]
    surfacers: tuple[tuple[SurfacerSpec, Any], ...]
    #: ``[[alert]]`` tables; probes no alert names get the default conditions, without notices.
    alerts: tuple[AlertSpec, ...] = ()
    #: The status page, when a ``[status]`` table is given.
    status: StatusSpec | None = None
    #: Per-target history in SQLite (docs/history.md): on by default for a config file (see
    #: :func:`load_config`), off for a config built in code unless given.
    history: HistorySpec | None = None
    #: ``[[maintenance]]`` windows: when notifications are held.
    maintenance: tuple[MaintenanceSpec, ...] = ()
    #: The ``[fleet]`` table: shard the targets with other agents (docs/fleet.md).
    fleet: FleetSpec | None = None
    #: Seconds surfacers get to flush at shutdown before they are cancelled.
    shutdown_grace: float = 5.0
    #: Where relative paths in the config are resolved from.
    base_dir: Path = attrs.field(factory=Path.cwd)
    #: The ``[reload]`` table, when given.
    reload: ReloadSpec | None = None


_TOP_KEYS = frozenset(
    {
        "probe",
        "surfacer",
        "shutdown_grace",
        "alert",
        "status",
        "maintenance",
        "fleet",
        "history",
        "reload",
    }
)


def parse_config(data: Mapping[str, Any], *, base_dir: Path | None = None) -> Config:
    """Validate a parsed TOML document; :class:`ConfigError` lists every problem found."""
    errors: list[str] = []
    for key in data.keys() - _TOP_KEYS:
        errors.append(f"{key}: unknown key{suggest(key, _TOP_KEYS)}")
    grace = parse_grace(data, errors)
    base_dir = base_dir or Path.cwd()
    probes, names = parse_probes(data.get("probe", []), base_dir, errors)
    surfacers = parse_surfacers(data.get("surfacer", []), base_dir, errors)
    alerts = parse_alerts(data.get("alert", []), names, base_dir, errors)
    errors.extend(shared_queue_dirs(surfacers, alerts))
    status = parse_status(data, base_dir, errors)
    history = parse_history(data, base_dir, errors)
    maintenance = parse_maintenance(data.get("maintenance", []), names, errors)
    for alert_index, alert in enumerate(alerts):
        errors.extend(check_depends_on(alert, f"alert[{alert_index}]", names))
    reload = parse_reload(data, errors)
    fleet = parse_fleet(data, alerts, errors)

    if errors:
        raise ConfigError("\n".join(errors))
    return Config(
        probes=tuple(probes),
        surfacers=tuple(surfacers),
        alerts=alerts,
        status=status,
        history=history,
        maintenance=maintenance,
        fleet=fleet,
        shutdown_grace=grace,
        base_dir=base_dir,
        reload=reload,
    )


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file; every error message starts with the file's name.

    Unlike :func:`parse_config`, it also checks that each ``targets_file`` can be read, so the
    error can name the config file and the key.
    """
    path = Path(path)
    try:
        data = tomllib.loads(read_bounded(path, MAX_CONFIG_BYTES))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    except RecursionError:
        # tomllib recurses once per nesting level: thousands of "[[[[" exhaust the stack.
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        config = parse_config(data, base_dir=path.parent)
        errors = targets_file_errors(config)
        if errors:
            raise ConfigError("\n".join(errors))
        if "history" not in data:
            # History is on by default for a config file, beside it (issue 20): a restart
            # keeps uptime. A config built in code (parse_config) writes no file unless asked.
            default = HistorySpec(path=str(path.parent / DEFAULT_HISTORY_FILE))
            config = attrs.evolve(config, history=default)
    except ConfigError as exc:
        raise ConfigError("\n".join(f"{path}: {line}" for line in str(exc).splitlines())) from None
    return config
