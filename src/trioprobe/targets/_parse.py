"""Parsing what sources read: target lists and Prometheus's file_sd / http_sd documents.

Pure functions (no I/O): the file sources call them in a worker thread, the HTTP and etcd
sources on bounded bodies. Each returns the targets and the bad entries it skipped, so one bad
entry never costs the others; a document that is not the documented shape at all raises
:class:`SourceError` (and the source keeps its last good targets).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from ._model import LABEL_NAME, Target

__all__ = [
    "CheckFn",
    "Parsed",
    "SourceError",
    "parse_sd_document",
    "parse_target_lines",
    "target_lines",
]

#: A probe type's ``check_target``: raises ``ValueError`` for a target it cannot probe.
CheckFn = Callable[[str], object]
#: The targets, and the bad ones skipped: address -> ``"where: why"``.
Parsed = tuple[tuple[Target, ...], dict[str, str]]


class SourceError(ValueError):
    """A source's document cannot be used as a whole; the message says where and why."""


def target_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, target) for each line that has one: ``#`` comments and blanks skipped."""
    for number, line in enumerate(text.splitlines(), 1):
        target = line.split("#", 1)[0].strip()
        if target:
            yield number, target


def parse_target_lines(text: str, where: str, check: CheckFn | None) -> Parsed:
    """A targets file: one target per line, duplicates counted once."""
    targets: dict[str, Target] = {}
    bad: dict[str, str] = {}
    for number, address in target_lines(text):
        problem = target_problem(address, check)
        if problem is not None:
            bad[address] = f"{where}:{number}: bad target {address!r}: {problem}"
        elif address not in targets:
            targets[address] = Target(address)
    return tuple(targets.values()), bad


def target_problem(address: str, check: CheckFn | None) -> str | None:
    """Why ``check`` refuses ``address`` (its ``ValueError``'s message), None if it passes."""
    if check is None:
        return None
    try:
        check(address)
    except ValueError as exc:
        return str(exc)
    return None


def load_document(data: bytes, where: str, *, yaml: bool) -> Any:
    """JSON, or YAML when ``yaml`` (file_sd takes both, by file extension, as Prometheus)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{where}: not UTF-8 text: {exc}") from None
    if yaml:
        import yaml as pyyaml  # imported here: only file_sd with a .yml/.yaml file needs it

        try:
            return pyyaml.safe_load(text) or []
        except pyyaml.YAMLError as exc:
            raise SourceError(f"{where}: invalid YAML: {_one_line(exc)}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SourceError(f"{where}: invalid JSON: {exc}") from None
    except RecursionError:
        raise SourceError(f"{where}: invalid JSON: nested too deeply") from None


def parse_sd_document(
    document: Any, where: str, check: CheckFn | None, template: str = "{address}"
) -> Parsed:
    """Prometheus's target groups: ``[{"targets": [...], "labels": {...}}, ...]``.

    As Prometheus documents it: ``targets`` is a list of strings, ``labels`` (optional) maps
    label names to string values; a target listed in several groups keeps the first group's
    labels. ``template`` turns an address into the probe's target (``"http://{address}/"``).
    """
    if not isinstance(document, list):
        raise SourceError(f"{where}: expected a list of target groups, got {_kind(document)}")
    targets: dict[str, Target] = {}
    bad: dict[str, str] = {}
    for index, group in enumerate(document):
        here = f"{where}: group {index}"
        if not isinstance(group, dict):
            raise SourceError(f"{here}: expected an object, got {_kind(group)}")
        unknown = group.keys() - {"targets", "labels"}
        if unknown:
            raise SourceError(f"{here}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        labels = _group_labels(group.get("labels") or {}, here)
        addresses = group.get("targets") or []
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise SourceError(f"{here}: `targets` must be a list of strings")
        for raw in addresses:
            address = template.replace("{address}", raw)
            problem = target_problem(address, check)
            if problem is not None:
                bad[address] = f"{here}: bad target {address!r}: {problem}"
            elif address not in targets:
                targets[address] = Target(address, {**labels, "__address__": raw})
    return tuple(targets.values()), bad


def _group_labels(labels: Any, where: str) -> dict[str, str]:
    if not isinstance(labels, dict):
        raise SourceError(f"{where}: `labels` must be an object, got {_kind(labels)}")
    for name, value in labels.items():
        if not isinstance(name, str) or not LABEL_NAME.match(name):
            raise SourceError(f"{where}: {name!r} is not a valid label name")
        if not isinstance(value, str):
            raise SourceError(f"{where}: label {name!r}: expected a string, got {_kind(value)}")
    return labels


def parse_label_object(data: bytes, where: str) -> dict[str, str]:
    """An etcd value: empty, or a JSON object of labels."""
    if not data.strip():
        return {}
    document = load_document(data, where, yaml=False)
    if not isinstance(document, dict):
        raise SourceError(f"{where}: expected a JSON object of labels, got {_kind(document)}")
    return _group_labels(document, where)


_KINDS: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
