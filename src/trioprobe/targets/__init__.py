"""Targets as their own layer: sources watched off the event loop, published as snapshots.

A probe's targets come from one or more sources, each a key of its ``[[probe]]`` table:
``targets`` (a list), ``targets_file``, ``file_sd``, ``http_sd``, ``dns_sd`` and ``etcd_sd``
(docs/targets.md). Each source runs as one watcher task per probe and does its reads and
parsing off the Trio thread; :class:`ProbeTargets` merges what they report into one immutable
:class:`Snapshot` that the probe's scheduler, its stats keeper and alerting all read. A source
that fails keeps its last good targets, is counted and logged at most once per 10 s.

The fleet's ownership filter plugs in as a :data:`SnapshotFilter` (``ProbeTargets(filter=...)``,
``set_filter``, ``refilter``; the runner's ``target_filter``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..specs import ProbeSpec
from ._compat import TargetsFile
from ._files import FileChanged, NotRegularFile, read_regular
from ._model import Snapshot, Target, exported_labels
from ._parse import CheckFn, SourceError, parse_sd_document, target_lines
from ._set import ProbeTargets, SnapshotFilter, SourceState
from ._source import Feed, Source
from .dns_sd import DnsSDSource
from .etcd_sd import EtcdSDSource
from .files import MAX_TARGETS_BYTES, FileSDSource, TargetsFileSource
from .http_sd import HttpSDSource
from .static import CallableSource, StaticSource

__all__ = [
    "MAX_TARGETS_BYTES",
    "CallableSource",
    "CheckFn",
    "DnsSDSource",
    "EtcdSDSource",
    "Feed",
    "FileChanged",
    "FileSDSource",
    "HttpSDSource",
    "NotRegularFile",
    "ProbeTargets",
    "Snapshot",
    "SnapshotFilter",
    "Source",
    "SourceError",
    "SourceState",
    "StaticSource",
    "Target",
    "TargetsFile",
    "TargetsFileSource",
    "as_probe_targets",
    "exported_labels",
    "parse_sd_document",
    "read_regular",
    "sources_for",
    "target_lines",
]


def sources_for(spec: ProbeSpec, base_dir: Path, check: CheckFn | None = None) -> list[Source]:
    """The sources a ``[[probe]]`` table's keys describe, in a fixed order (``targets`` first:
    where two sources list one address, the first one's labels win)."""
    template = spec.target_template
    sources: list[Source] = []
    if spec.targets:
        sources.append(StaticSource(spec.targets))
    if spec.targets_file is not None:
        sources.append(TargetsFileSource(base_dir / spec.targets_file, check))
    if spec.file_sd is not None:
        sources.append(FileSDSource(base_dir / spec.file_sd, check, template=template))
    if spec.http_sd is not None:
        sources.append(
            HttpSDSource(
                spec.http_sd, check, template=template, refresh_interval=spec.refresh_interval
            )
        )
    if spec.dns_sd:
        sources.append(
            DnsSDSource(
                spec.dns_sd,
                check,
                rdtype=spec.dns_sd_type,
                port=spec.dns_sd_port,
                server=spec.dns_sd_server,
                template=template,
                refresh_interval=spec.refresh_interval,
            )
        )
    if spec.etcd_sd is not None:
        sources.append(
            EtcdSDSource(spec.etcd_sd.endpoints, spec.etcd_sd.prefix, check, template=template)
        )
    return sources


def as_probe_targets(
    targets: ProbeTargets | Callable[[], Sequence[str]] | Sequence[str], probe: str = ""
) -> ProbeTargets:
    """``targets`` as a :class:`ProbeTargets`: a list (or tuple) becomes a fixed source, any
    other callable (the API before this layer) a source polled every second."""
    if isinstance(targets, ProbeTargets):
        return targets
    if callable(targets):
        return ProbeTargets(probe, [CallableSource(targets)])
    return ProbeTargets(probe, [StaticSource(targets)])
