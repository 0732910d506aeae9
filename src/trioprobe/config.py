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
"""

from __future__ import annotations

import difflib
import errno
import logging
import os
import tomllib
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, is_sequence
from cattrs.errors import ClassValidationError
from cattrs.v import format_exception

from ._durations import DURATION_EXAMPLE, parse_duration
from ._options import is_path_value
from .fleet.spec import FleetSpec
from .metrics import MetricsError
from .probes import probe_types
from .registry import PluginError
from .results import LATENCY_UNITS
from .specs import (
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
from .surfacers import HasQueueDir, NamePrefix, surfacer_types
from .surfacers._naming import BUILTIN_EXPORTS, CORE_EXPORTS, clash_warnings, series_per_target
from .targets import (
    MAX_TARGETS_BYTES,
    FileSDSource,
    SourceError,
    TargetsFile,
    TargetsFileSource,
    target_lines,
)
from .validators import KEY_RANGES, SECONDS, SECONDS_OR_ZERO, check_numbers, range_for

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


_converter = cattrs.Converter(forbid_extra_keys=True)


# cattrs converts leniently by default: `targets = "http://x/"` became a tuple of characters,
# `name = 5` the string "5", `interval = true` 1.0. A config mistake must be an error instead.
def _strict_scalar(cls: type[Any]) -> Callable[[Any, Any], Any]:
    accepted: tuple[type[Any], ...] = (int, float) if cls is float else (cls,)

    def structure(value: Any, _: Any) -> Any:
        if (isinstance(value, bool) and cls is not bool) or not isinstance(value, accepted):
            raise TypeError(f"expected {cls.__name__}, got {type(value).__name__}")
        return cls(value)

    return structure


def _no_string_tuples(type_: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    default = homogenous_tuple_structure_factory(type_, converter)

    def structure(value: Any, type_: Any) -> Any:
        if isinstance(value, str | bytes | Mapping):
            raise TypeError(f"expected an array, got {type(value).__name__}")
        return default(value, type_)

    return structure


for _cls in (str, int, float, bool):
    _converter.register_structure_hook(_cls, _strict_scalar(_cls))
_converter.register_structure_hook_factory(
    lambda t: is_sequence(t) and getattr(t, "__origin__", None) is tuple, _no_string_tuples
)
_PROBE_KEYS = frozenset(attrs.fields_dict(ProbeSpec))
_SURFACER_KEYS = frozenset(attrs.fields_dict(SurfacerSpec))
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


def _format_exception(exc: BaseException, type_: type | None) -> str:
    # A ValueError with no target type was raised by an Options validator, whose message says
    # what is wrong; cattrs would reduce it to "invalid value".
    if isinstance(exc, ValueError) and type_ is None and str(exc):
        return str(exc)
    return format_exception(exc, type_)


def _describe(exc: BaseException, path: str) -> list[str]:
    if isinstance(exc, ClassValidationError | cattrs.BaseValidationError):
        messages = cattrs.transform_error(exc, path=path, format_exception=_format_exception)
        return [_tidy(m) for m in messages]
    return [f"{exc} @ {path}"]


def _tidy(message: str) -> str:
    # cattrs says "... @ $.probe[0].interval"; lead with the key path, which is what users scan.
    text, _, where = message.rpartition(" @ ")
    where = where.removeprefix("$.").removeprefix("$")
    if text.startswith("extra fields found"):
        text = text.replace("extra fields found", "unknown key(s)", 1)
    return f"{where}: {text}" if text else message


def _structure(
    data: Any, cls: type[Any], path: str, errors: list[str], quiet: Collection[str] = ()
) -> Any:
    """``data`` structured as ``cls``, or ``None`` with its problems added to ``errors``.

    Messages about the key paths in ``quiet`` are dropped: each was already reported as part of
    another problem (one line per problem: a misspelt required key is one mistake, not an unknown
    key plus a missing one).
    """
    try:
        return _converter.structure(data, cls)
    except Exception as exc:  # cattrs raises many kinds; each becomes a message
        messages = _describe(exc, path)
        errors.extend(m for m in messages if m.partition(": ")[0] not in quiet)
        return None


def _closest(word: str, choices: Collection[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def _suggest(word: str, choices: Collection[str]) -> str:
    """``; did you mean 'x'?`` for the closest of ``choices``, or ``; expected one of ...``
    when nothing is close and the list is short enough to read in one line."""
    close = _closest(word, choices)
    if close is not None:
        return f"; did you mean {close!r}?"
    if len(choices) <= 12:
        return f"; expected one of {', '.join(sorted(choices))}"
    return ""


def _unknown_keys(
    table: Mapping[str, Any],
    known: Collection[str],
    path: str,
    errors: list[str],
    required: Collection[str] = (),
) -> tuple[dict[str, Any], set[str]]:
    """``table`` without its unknown keys, each reported on a line of its own with the closest
    known key; and the key paths suggested (a required key suggested must not also be reported
    as missing: a misspelt key is one mistake).

    A key the table already sets is not suggested; a missing ``required`` key is, more
    leniently (``qnam`` is taken for a missing ``query_name``).
    """
    kept = {key: value for key, value in table.items() if key in known}
    unset = [key for key in known if key not in table]
    missing = [key for key in required if key not in table]
    suggested: set[str] = set()
    for key in [key for key in table if key not in kept]:
        lenient = difflib.get_close_matches(key, missing, n=1, cutoff=0.4)
        close = lenient[0] if lenient else _closest(key, unset)
        if close is not None:
            errors.append(f"{path}.{key}: unknown key; did you mean {close!r}?")
            suggested.add(f"{path}.{close}")
        else:
            errors.append(f"{path}.{key}: unknown key{_suggest(key, known)}")
    return kept, suggested


#: Integer keys that are whole seconds: a duration is accepted if it is a whole number of them.
_WHOLE_SECONDS = frozenset({"refresh"})


def _duration_keys(cls: type[Any]) -> dict[str, bool]:
    """The keys of attrs class ``cls`` that are seconds: name -> whether it is whole seconds.

    A float key is seconds unless :data:`~trioprobe.validators.KEY_RANGES` says otherwise
    (``base``, ``scale``), as everywhere in the config."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # a plugin's Options with unresolvable annotations: no durations then
        return {}
    keys: dict[str, bool] = {}
    for field in attrs.fields(cls):
        hint = hints.get(field.name)
        if hint is float or (
            typing.get_origin(hint) in (typing.Union, types.UnionType)
            and set(typing.get_args(hint)) == {float, type(None)}
        ):
            if range_for(field.name, 1.0) in (SECONDS, SECONDS_OR_ZERO):
                keys[field.name] = False
        elif hint is int and field.name in _WHOLE_SECONDS:
            keys[field.name] = True
    return keys


def _durations(
    table: Mapping[str, Any], cls: type[Any], path: str, errors: list[str]
) -> tuple[dict[str, Any], set[str]]:
    """``table`` with durations written as text (``"5s"``, ``"1m30s"``) in its seconds keys made
    numbers of seconds; and the key paths of the bad ones (reported here, once)."""
    out = dict(table)
    bad: set[str] = set()
    if not attrs.has(cls):
        return out, bad
    for key, whole in _duration_keys(cls).items():
        value = table.get(key)
        if not isinstance(value, str):
            continue
        try:
            seconds = parse_duration(value)
        except ValueError:
            errors.append(f"{path}.{key}: expected {DURATION_EXAMPLE}, got {value!r}")
            bad.add(f"{path}.{key}")
            continue
        if whole and not seconds.is_integer():
            errors.append(f"{path}.{key}: expected a whole number of seconds, got {value!r}")
            bad.add(f"{path}.{key}")
            continue
        out[key] = int(seconds) if whole else seconds
    return out, bad


def _split(
    table: Mapping[str, Any], common: frozenset[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    own = {k: v for k, v in table.items() if k in common}
    rest = {k: v for k, v in table.items() if k not in common}
    return own, rest


def _check_probe(spec: ProbeSpec, path: str, errors: list[str]) -> None:
    if spec.type not in probe_types:
        hint = _suggest(spec.type, probe_types.names())
        errors.append(f"{path}.type: unknown probe type {spec.type!r}{hint}")
    _check_sources(spec, path, errors)
    check = target_checker(spec.type)
    if check is not None:
        for index, target in enumerate(spec.targets):
            try:
                check(target)
            except ValueError as exc:
                errors.append(f"{path}.targets[{index}]: bad target {target!r}: {exc}")
    number_errors = check_numbers(spec, path)
    if spec.latency_buckets is not None and len(spec.latency_buckets.bounds) > 1000:
        number_errors.append(f"{path}.latency_buckets.bounds: expected at most 1000 bounds")
    errors.extend(number_errors)
    if number_errors:
        return  # the checks below assume sane numbers
    if spec.stats_interval is not None and spec.stats_interval < spec.interval:
        errors.append(
            f"{path}.stats_interval: {spec.stats_interval}s is shorter than the probe interval "
            f"({spec.interval}s); expected at least the interval"
        )
    if spec.slo is not None and not 0 < spec.slo < 1:
        errors.append(f"{path}.slo: expected a ratio between 0 and 1 (0.999), got {spec.slo}")
    if spec.latency_unit not in LATENCY_UNITS:
        errors.append(f"{path}.latency_unit: expected one of ns, us, ms, s")
    if spec.latency_buckets is not None:
        try:
            spec.latency_buckets.distribution()
        except MetricsError as exc:
            errors.append(f"{path}.latency_buckets: {exc}")
        except OverflowError:
            errors.append(f"{path}.latency_buckets: scale * base ** (count - 1) is too large")


_SOURCE_KEYS = "targets, targets_file, file_sd, http_sd, dns_sd or etcd_sd"


def _check_sources(spec: ProbeSpec, path: str, errors: list[str]) -> None:
    """The target sources' own keys (docs/targets.md); their contents are read later."""
    has_source = (
        spec.targets or spec.targets_file or spec.file_sd or spec.http_sd or spec.dns_sd
    ) or spec.etcd_sd is not None
    if not has_source:
        errors.append(
            f"{path}: no targets: give at least one of {_SOURCE_KEYS} (see docs/targets.md)"
        )
    for key in ("targets_file", "file_sd"):
        if getattr(spec, key) == "":
            errors.append(f"{path}.{key}: expected a file path, got an empty string")
    if spec.http_sd is not None and not spec.http_sd.startswith(("http://", "https://")):
        errors.append(f"{path}.http_sd: expected an http:// or https:// URL, got {spec.http_sd!r}")
    for i, name in enumerate(spec.dns_sd):
        if not name or len(name) > 253:
            errors.append(f"{path}.dns_sd[{i}]: expected a DNS name, got {name!r}")
    if spec.dns_sd and spec.dns_sd_type != "SRV" and spec.dns_sd_port is None:
        errors.append(f"{path}.dns_sd_port: required with dns_sd_type = {spec.dns_sd_type!r}")
    if spec.dns_sd_port is not None and not 1 <= spec.dns_sd_port <= 65535:
        errors.append(f"{path}.dns_sd_port: expected a port number 1-65535, got {spec.dns_sd_port}")
    if spec.dns_sd_server is not None:
        _check_dns_server(spec.dns_sd_server, f"{path}.dns_sd_server", errors)
    if spec.etcd_sd is not None:
        if not spec.etcd_sd.endpoints:
            errors.append(f"{path}.etcd_sd.endpoints: expected at least one http:// URL")
        for i, url in enumerate(spec.etcd_sd.endpoints):
            if not url.startswith(("http://", "https://")):
                errors.append(
                    f"{path}.etcd_sd.endpoints[{i}]: expected an http(s):// URL, got {url!r}"
                )
        if not spec.etcd_sd.prefix:
            errors.append(f"{path}.etcd_sd.prefix: must not be empty (every key would be a target)")
    if "{address}" not in spec.target_template:
        errors.append(f"{path}.target_template: expected a template containing {{address}}")


def _check_dns_server(server: str, where: str, errors: list[str]) -> None:
    from .targets.dns_sd import split_server  # here: dnspython is imported only when used

    try:
        host, port = split_server(server)
    except ValueError:
        host, port = "", 0
    if not host or not 0 < port <= 65535:
        errors.append(f"{where}: expected host, host:port or [v6]:port, got {server!r}")


def parse_config(data: Mapping[str, Any], *, base_dir: Path | None = None) -> Config:
    """Validate a parsed TOML document; :class:`ConfigError` lists every problem found."""
    errors: list[str] = []
    for key in data.keys() - _TOP_KEYS:
        errors.append(f"{key}: unknown key{_suggest(key, _TOP_KEYS)}")
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

    probes: list[tuple[ProbeSpec, Any]] = []
    raw_probes = data.get("probe", [])
    if not isinstance(raw_probes, list) or not all(isinstance(p, dict) for p in raw_probes):
        errors.append("probe: expected an array of tables ([[probe]])")
        raw_probes = []
    if not raw_probes:
        errors.append("probe: no probes configured; add at least one [[probe]] table")
    names: set[str] = set()
    for i, table in enumerate(raw_probes):
        parsed = _parse_probe(table, f"probe[{i}]", base_dir or Path.cwd(), errors)
        if parsed is None:
            continue
        spec, options = parsed
        if spec.name in names:
            errors.append(f"probe[{i}].name: duplicate probe name {spec.name!r}")
        names.add(spec.name)
        probes.append((spec, options))

    surfacers: list[tuple[SurfacerSpec, Any]] = []
    raw_surfacers = data.get("surfacer", [])
    if not isinstance(raw_surfacers, list) or not all(isinstance(s, dict) for s in raw_surfacers):
        errors.append("surfacer: expected an array of tables ([[surfacer]])")
        raw_surfacers = []
    for i, table in enumerate(raw_surfacers):
        surfacer = _parse_surfacer(table, f"surfacer[{i}]", base_dir or Path.cwd(), errors)
        if surfacer is not None:
            surfacers.append(surfacer)

    alerts = _parse_alerts(data.get("alert", []), names, base_dir or Path.cwd(), errors)
    errors.extend(_shared_queue_dirs(surfacers, alerts))
    status = None
    if "status" in data:
        raw_status = data["status"]
        quiet: set[str] = set()
        if isinstance(raw_status, Mapping):
            raw_status, quiet = _known_durations(raw_status, StatusSpec, "status", errors)
        status = _structure(raw_status, StatusSpec, "$.status", errors, quiet)
        if status is not None:
            status = resolve_paths(status, base_dir or Path.cwd())
            errors.extend(check_numbers(status, "status"))
            if status.refresh < 1:
                errors.append(f"status.refresh: expected >= 1 second, got {status.refresh}")

    history = _parse_history(data, base_dir or Path.cwd(), errors)
    maintenance = _parse_maintenance(data.get("maintenance", []), names, errors)
    for alert_index, alert in enumerate(alerts):
        errors.extend(_check_depends_on(alert, f"alert[{alert_index}]", names))
    reload = None
    if "reload" in data:
        reload = _structure(data["reload"], ReloadSpec, "$.reload", errors)
        if reload is not None:
            errors.extend(check_numbers(reload, "reload"))

    fleet = _parse_fleet(data, alerts, errors)

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
        shutdown_grace=float(grace),
        base_dir=base_dir or Path.cwd(),
        reload=reload,
    )


#: The history database's name beside the config file when ``[history]`` names no path.
DEFAULT_HISTORY_FILE = "trioprobe-history.sqlite"


def _parse_history(
    data: Mapping[str, Any], base_dir: Path, errors: list[str]
) -> HistorySpec | None:
    if "history" not in data:
        return None
    raw = data["history"]
    quiet: set[str] = set()
    if isinstance(raw, Mapping):
        raw, quiet = _known_durations(raw, HistorySpec, "history", errors)
    spec: HistorySpec | None = _structure(raw, HistorySpec, "$.history", errors, quiet)
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


def _parse_maintenance(
    raw: object, probes: set[str], errors: list[str]
) -> tuple[MaintenanceSpec, ...]:
    from .alerting.maintenance import MAX_RECURRING_DURATION, Cron, parse_time

    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        errors.append("maintenance: expected an array of tables ([[maintenance]])")
        return ()
    out = []
    for i, table in enumerate(raw):
        path = f"maintenance[{i}]"
        table, quiet = _known_durations(table, MaintenanceSpec, path, errors)
        spec = _structure(table, MaintenanceSpec, f"$.{path}", errors, quiet)
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


def _check_depends_on(spec: AlertSpec, path: str, probes: set[str]) -> list[str]:
    from .alerting.depends import parse_dependency

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


def _known_durations(
    table: Mapping[str, Any],
    cls: type[Any],
    path: str,
    errors: list[str],
    common: Collection[str] = (),
) -> tuple[dict[str, Any], set[str]]:
    """``table`` (of attrs class ``cls``) without unknown keys and with durations made seconds,
    and the key paths whose problems are already reported. ``common`` keys (split off before)
    are known too: ``intervl`` is closest to the common ``interval``."""
    known = attrs.fields_dict(cls).keys() | common
    required = [f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING]
    kept, suggested = _unknown_keys(table, known, path, errors, required)
    kept, bad = _durations(kept, cls, path, errors)
    return kept, suggested | bad


def _options_class(
    registry: Any, type_name: object, path: str, errors: list[str]
) -> type[Any] | None:
    """The ``Options`` class of a probe or surfacer type, if the type is known and loads."""
    if not isinstance(type_name, str) or type_name not in registry:
        return None
    try:
        cls: type[Any] = registry.load(type_name).Options
    except PluginError as exc:
        errors.append(f"{path}.type: {exc}")
        return None
    return cls if attrs.has(cls) else None


def _nested_tables(cls: type[Any]) -> dict[str, type[Any]]:
    """The keys of ``cls`` that are tables of their own (``latency_buckets = {...}``): an
    attrs class, or an optional one."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: no nested checks then
        return {}
    out: dict[str, type[Any]] = {}
    for name, hint in hints.items():
        candidates = (
            typing.get_args(hint)
            if typing.get_origin(hint) in (typing.Union, types.UnionType)
            else (hint,)
        )
        for candidate in candidates:
            if isinstance(candidate, type) and attrs.has(candidate):
                out[name] = candidate
    return out


#: ProbeSpec's nested tables (latency_buckets, etcd_sd...), each checked for unknown keys and
#: durations like the probe table itself.
_NESTED_PROBE_TABLES = _nested_tables(ProbeSpec)


def _parse_probe(
    table: Mapping[str, Any], path: str, base_dir: Path, errors: list[str]
) -> tuple[ProbeSpec, Any] | None:
    options_cls = _options_class(probe_types, table.get("type"), path, errors)
    own, rest = _split(table, _PROBE_KEYS)
    own, quiet = _durations(own, ProbeSpec, path, errors)
    for key, nested_cls in _NESTED_PROBE_TABLES.items():
        if isinstance(own.get(key), Mapping):
            own[key], nested = _known_durations(own[key], nested_cls, f"{path}.{key}", errors)
            quiet |= nested
    # Unknown keys are only known as such once the type is: an unknown type is its own error.
    if options_cls is not None:
        rest, rest_quiet = _known_durations(rest, options_cls, path, errors, _PROBE_KEYS)
        quiet |= rest_quiet
    spec = _structure(own, ProbeSpec, f"$.{path}", errors, quiet)
    # Check the type-specific keys even when common ones failed, to report everything at once.
    options = None
    if options_cls is not None:
        options = _structure(rest, options_cls, f"$.{path}", errors, quiet)
    if options is not None:
        errors.extend(check_numbers(options, path))
        options = resolve_paths(options, base_dir)
    if spec is None:
        return None
    _check_probe(spec, path, errors)
    return spec, options


def _parse_surfacer(
    table: Mapping[str, Any], path: str, base_dir: Path, errors: list[str]
) -> tuple[SurfacerSpec, Any] | None:
    own, rest = _split(table, _SURFACER_KEYS)
    sspec = _structure(own, SurfacerSpec, f"$.{path}", errors)
    if sspec is None:
        return None
    if sspec.type not in surfacer_types:
        errors.append(
            f"{path}.type: unknown surfacer type {sspec.type!r}"
            f"{_suggest(sspec.type, surfacer_types.names())}"
        )
        return None
    errors.extend(check_numbers(sspec, path))
    options_cls = _options_class(surfacer_types, sspec.type, path, errors)
    if options_cls is None:
        return None
    rest, quiet = _known_durations(rest, options_cls, path, errors, _SURFACER_KEYS)
    options = _structure(rest, options_cls, f"$.{path}", errors, quiet)
    if options is not None:
        errors.extend(check_numbers(options, path))
        options = resolve_paths(options, base_dir)
    return sspec, options


def _parse_fleet(
    data: Mapping[str, Any], alerts: Sequence[AlertSpec], errors: list[str]
) -> FleetSpec | None:
    fleet = None
    if isinstance(data.get("fleet"), Mapping):
        table, quiet = _known_durations(data["fleet"], FleetSpec, "fleet", errors)
        fleet = _structure(table, FleetSpec, "$.fleet", errors, quiet)
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


def _parse_alerts(
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
        table, quiet = _known_durations(table, AlertSpec, path, errors)
        spec = _structure(table, AlertSpec, f"$.{path}", errors, quiet)
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


def _shared_queue_dirs(
    surfacers: Sequence[tuple[SurfacerSpec, Any]], alerts: Sequence[AlertSpec]
) -> list[str]:
    """A handoff queue directory is locked by whoever opens it first, so two users of one
    directory pass every other check and then fail at start-up: say so here instead."""
    from .alerting.notify import default_webhook_dir  # here: alerting imports this module
    from .handoff.disk_queue import default_queue_dir

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
    from .alerting.notify import check_template  # here: alerting imports this module

    for arg in spec.command:
        try:
            check_template(arg)
        except ValueError as exc:
            errors.append(f"{path}.command: {exc}")


def resolve_paths(options: Any, base_dir: Path) -> Any:
    """``options`` with its relative path fields (see ``_options.path_field``) made absolute under
    ``base_dir``.

    ``""`` and ``"-"`` (standard output) are left alone.
    """
    changes = {}
    for field in attrs.fields(type(options)):
        value = getattr(options, field.name)
        if is_path_value(field, value) and value not in ("", "-") and not os.path.isabs(value):
            changes[field.name] = str(base_dir / value)
    return attrs.evolve(options, **changes) if changes else options


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
        _check_targets_files(config)
        if "history" not in data:
            # History is on by default for a config file, beside it (issue 20): a restart
            # keeps uptime. A config built in code (parse_config) writes no file unless asked.
            default = HistorySpec(path=str(path.parent / DEFAULT_HISTORY_FILE))
            config = attrs.evolve(config, history=default)
    except ConfigError as exc:
        raise ConfigError("\n".join(f"{path}: {line}" for line in str(exc).splitlines())) from None
    return config


def _check_targets_files(config: Config) -> None:
    """Read each probe's file sources now (``check`` and start-up): a file that is missing, not
    a regular file, too big or not the right format is an error naming the key."""
    errors: list[str] = []
    for i, (spec, _) in enumerate(config.probes):
        check = target_checker(spec.type)
        sources: list[tuple[str, TargetsFileSource | FileSDSource]] = []
        if spec.targets_file is not None:
            file = config.base_dir / spec.targets_file
            sources.append(("targets_file", TargetsFileSource(file, check)))
        if spec.file_sd is not None:
            file = config.base_dir / spec.file_sd
            sources.append(("file_sd", FileSDSource(file, check, template=spec.target_template)))
        for key, source in sources:
            try:
                _, bad = source.preload()
            except SourceError as exc:
                errors.append(f"probe[{i}].{key}: {exc}")
            except OSError as exc:
                reason = exc.strerror or exc
                errors.append(f"probe[{i}].{key}: cannot read {source.path}: {reason}")
            else:
                errors.extend(f"probe[{i}].{key}: {message}" for message in bad.values())
    if errors:
        raise ConfigError("\n".join(errors))


def exposition_warnings(config: Config) -> list[str]:
    """Where this config's probes export one metric name in ways that do not line up (different
    types, or latency histograms with different buckets): nothing is lost, but users should
    know. Probe types of your own are seen through their module's ``EXPORTS``, if any."""
    probes = []
    for spec, _ in config.probes:
        exports = dict(CORE_EXPORTS)
        own = BUILTIN_EXPORTS.get(spec.type)
        if own is None:
            own = probe_types.hook(spec.type, "EXPORTS")
        exports.update(own)
        probes.append((spec.name, exports, _latency_bounds(spec)))
    prefixes = [
        o.prefix
        for s, o in config.surfacers
        if s.type == "prometheus" and isinstance(o, NamePrefix)
    ]
    return clash_warnings(probes, prefixes[0] if prefixes else "trioprobe_")


def _latency_bounds(spec: ProbeSpec) -> tuple[float, ...] | None:
    buckets = spec.latency_buckets
    if not buckets:
        return None
    return tuple(buckets.distribution(LATENCY_UNITS[spec.latency_unit]).lower_bounds[1:])


def probe_series(spec: ProbeSpec, options: Any) -> int:
    """Series each target of this probe adds to /metrics (``trioprobe check`` prints it)."""
    return series_per_target(spec.type, options, _latency_bounds(spec))


def target_checker(probe_type: str) -> Callable[[str], object] | None:
    """The probe type's ``check_target`` (raises ``ValueError`` for a bad target), if it has one."""
    if probe_type not in probe_types:
        return None
    try:
        checker: Callable[[str], object] | None = probe_types.hook(probe_type, "check_target")
    except PluginError:
        return None  # parse_config reports it, once, against the probe's type
    return checker


def parse_targets(text: str) -> tuple[str, ...]:
    """One target per line; blank lines and ``#`` comments are ignored; duplicates dropped."""
    return tuple(dict.fromkeys(target for _, target in target_lines(text)))
