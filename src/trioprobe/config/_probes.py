"""The ``[[probe]]`` tables: the common keys, the probe type's own ``Options``, the targets.

Its keys depend on its ``type`` (as a surfacer's do), and its target sources are checked twice:
their keys when the config is parsed, the files they name when it is loaded from a file
(:func:`targets_file_errors`), so that ``trioprobe check`` names the key of a bad file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .._ticks import MIN_SLOT
from ..metrics import MetricsError
from ..probes import probe_types
from ..registry import PluginError
from ..results import LATENCY_UNITS
from ..specs import ProbeSpec
from ..targets import FileSDSource, SourceError, TargetsFileSource, target_lines
from ..validators import check_numbers
from ._tables import (
    durations,
    known_durations,
    nested_tables,
    options_class,
    resolve_paths,
    split,
    structure,
    suggest,
)

if TYPE_CHECKING:
    from . import Config


_PROBE_KEYS = frozenset(attrs.fields_dict(ProbeSpec))
#: ProbeSpec's nested tables (latency_buckets, etcd_sd...), each checked for unknown keys and
#: durations like the probe table itself.
_NESTED_PROBE_TABLES = nested_tables(ProbeSpec)


def parse_probes(
    raw_probes: Any, base_dir: Path, errors: list[str]
) -> tuple[list[tuple[ProbeSpec, Any]], set[str]]:
    """The ``[[probe]]`` tables, and the probes' names (alerts and maintenance refer to them)."""
    probes: list[tuple[ProbeSpec, Any]] = []
    if not isinstance(raw_probes, list) or not all(isinstance(p, dict) for p in raw_probes):
        errors.append("probe: expected an array of tables ([[probe]])")
        raw_probes = []
    if not raw_probes:
        errors.append("probe: no probes configured; add at least one [[probe]] table")
    names: set[str] = set()
    for i, table in enumerate(raw_probes):
        parsed = _parse_probe(table, f"probe[{i}]", base_dir, errors)
        if parsed is None:
            continue
        spec, options = parsed
        if spec.name in names:
            errors.append(f"probe[{i}].name: duplicate probe name {spec.name!r}")
        names.add(spec.name)
        probes.append((spec, options))
    return probes, names


def _parse_probe(
    table: Mapping[str, Any], path: str, base_dir: Path, errors: list[str]
) -> tuple[ProbeSpec, Any] | None:
    options_cls = options_class(probe_types, table.get("type"), path, errors)
    own, rest = split(table, _PROBE_KEYS)
    own, quiet = durations(own, ProbeSpec, path, errors)
    for key, nested_cls in _NESTED_PROBE_TABLES.items():
        if isinstance(own.get(key), Mapping):
            own[key], nested = known_durations(own[key], nested_cls, f"{path}.{key}", errors)
            quiet |= nested
    # Unknown keys are only known as such once the type is: an unknown type is its own error.
    if options_cls is not None:
        rest, rest_quiet = known_durations(rest, options_cls, path, errors, _PROBE_KEYS)
        quiet |= rest_quiet
    spec = structure(own, ProbeSpec, f"$.{path}", errors, quiet)
    # Check the type-specific keys even when common ones failed, to report everything at once.
    options = None
    if options_cls is not None:
        options = structure(rest, options_cls, f"$.{path}", errors, quiet)
    if options is not None:
        errors.extend(check_numbers(options, path))
        options = resolve_paths(options, base_dir)
    if spec is None:
        return None
    _check_probe(spec, path, errors)
    return spec, options


def _check_probe(spec: ProbeSpec, path: str, errors: list[str]) -> None:
    if spec.type not in probe_types:
        hint = suggest(spec.type, probe_types.names())
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
    if 0 < spec.tick_slot < MIN_SLOT:
        errors.append(
            f"{path}.tick_slot: expected 0 (a timer per target) or at least {MIN_SLOT:g}s, "
            f"got {spec.tick_slot:g}"
        )
    elif spec.tick_slot > spec.interval:
        errors.append(
            f"{path}.tick_slot: {spec.tick_slot}s is longer than the probe interval "
            f"({spec.interval}s); expected at most the interval"
        )
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
    from ..targets.dns_sd import split_server  # here: dnspython is imported only when used

    try:
        host, port = split_server(server)
    except ValueError:
        host, port = "", 0
    if not host or not 0 < port <= 65535:
        errors.append(f"{where}: expected host, host:port or [v6]:port, got {server!r}")


def target_checker(probe_type: str) -> Callable[[str], object] | None:
    """The probe type's ``check_target`` (raises ``ValueError`` for a bad target), if it has one."""
    if probe_type not in probe_types:
        return None
    try:
        checker: Callable[[str], object] | None = probe_types.hook(probe_type, "check_target")
    except PluginError:
        return None  # parse_config reports it, once, against the probe's type
    return checker


def targets_file_errors(config: Config) -> list[str]:
    """Read each probe's file sources now (``check`` and start-up): a file that is missing, not
    a regular file, too big or not the right format is an error naming the key (none: ``[]``)."""
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
    return errors


def parse_targets(text: str) -> tuple[str, ...]:
    """One target per line; blank lines and ``#`` comments are ignored; duplicates dropped."""
    return tuple(dict.fromkeys(target for _, target in target_lines(text)))
