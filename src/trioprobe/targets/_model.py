"""The values the targets layer publishes: a :class:`Target` and a probe's :class:`Snapshot`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import attrs

__all__ = ["LABEL_NAME", "Snapshot", "Target", "exported_labels"]

#: A Prometheus label name; discovery labels with other names are refused with their source.
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def _labels(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    # Sorted pairs: a Target must be hashable and equal whatever order a source listed labels in.
    pairs = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), str(v)) for k, v in pairs))


@attrs.frozen(slots=True)
class Target:
    """One target: the address a probe is given, and the labels its source attached to it.

    The address is what the probe type understands (a URL, ``host:port``, a log spec...); the
    labels become exported labels beside ``ptype``/``probe``/``dst`` (see :func:`exported_labels`).
    """

    address: str
    labels: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_labels)

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def exported_labels(target: Target) -> dict[str, str]:
    """The labels of ``target`` that are exported: Prometheus drops every label starting
    ``__`` (``__address__``, ``__meta_*``, ``__param_*``) once relabelling is done, so do we."""
    return {k: v for k, v in target.labels if not k.startswith("__")}


@attrs.frozen(slots=True)
class Snapshot:
    """A probe's targets at one moment: immutable, so the scheduler, the stats keeper and
    alerting read the same one without locks, and a reader never sees half an update.

    ``generation`` grows by one with every change, so a reader can tell that nothing changed
    without comparing lists.
    """

    targets: tuple[Target, ...] = ()
    generation: int = 0
    #: Addresses in order, computed once: what ``targets()`` callables return.
    addresses: tuple[str, ...] = attrs.field(init=False)
    _by_address: Mapping[str, Target] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        by_address: dict[str, Target] = {}
        for target in self.targets:
            by_address.setdefault(target.address, target)
        object.__setattr__(self, "addresses", tuple(by_address))
        object.__setattr__(self, "_by_address", MappingProxyType(by_address))

    def __len__(self) -> int:
        return len(self.addresses)

    def __contains__(self, address: object) -> bool:
        return address in self._by_address

    def get(self, address: str) -> Target | None:
        return self._by_address.get(address)

    def labels_of(self, address: str) -> dict[str, str]:
        """The exported discovery labels of ``address`` (empty for an unknown one)."""
        target = self._by_address.get(address)
        return exported_labels(target) if target is not None else {}

    @classmethod
    def of(cls, targets: Iterable[Target | str], generation: int = 0) -> Snapshot:
        """A snapshot of ``targets`` (plain strings become label-less targets)."""
        return cls(tuple(t if isinstance(t, Target) else Target(t) for t in targets), generation)
