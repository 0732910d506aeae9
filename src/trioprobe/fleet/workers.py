"""``trioprobe run --workers N``, the worker's side: which targets a worker owns, and how its
config differs from the host's.

N worker processes on one host split the targets by the fleet's rendezvous rule over a fixed
member list (``worker-0`` .. ``worker-{N-1}``, one replica): no etcd, no messages between
workers, and the parent can tell which worker owns any (probe, target) by the same arithmetic
(it routes a target's status page there). The parent serves the host's public ``/metrics``
and status page; each worker serves its own on a private loopback port (port 0) and tells the
parent where, in one line on its standard output (:data:`READY_PREFIX`).

Files a process keeps to itself (a handoff queue, the history database) get a per-worker name
for workers 1 and up; worker 0 keeps the configured one, so ``--workers 1`` (and a host that
goes from 1 worker to N) keeps its queues and history.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, cast

import attrs

from ..config import Config
from ..surfacers import HasQueueDir
from ..targets import Target
from .rendezvous import Member, key_of, owners

__all__ = [
    "MAX_WORKERS",
    "READY_PREFIX",
    "ShardFilter",
    "owner_of",
    "ready_line",
    "worker_config",
    "worker_members",
]

#: More workers than this is a mistake on any host this runs on (each is a whole process).
MAX_WORKERS = 64
#: How a worker's readiness line starts (then one JSON object: its private URLs).
READY_PREFIX = "\x1etrioprobe-worker-ready "


def worker_members(count: int) -> tuple[Member, ...]:
    return tuple(Member(f"worker-{i}") for i in range(count))


def owner_of(probe: str, target: str, members: Sequence[Member]) -> int:
    """The index of the worker that owns (probe, target) among ``members``."""
    (name,) = owners(key_of(probe, target), members, 1)
    return int(name.rsplit("-", 1)[1])


class ShardFilter:
    """The targets layer's filter (:data:`trioprobe.targets.SnapshotFilter`) of worker ``index``.

    Each address is scored once (a few microseconds per worker) and remembered, like the fleet's
    :class:`~.ownership.Ownership`; the member list never changes, so nothing is recomputed.
    """

    def __init__(self, index: int, count: int) -> None:
        self.index = index
        self.members = worker_members(count)
        self._owned: dict[str, dict[str, bool]] = {}

    def owns(self, probe: str, target: str) -> bool:
        return owner_of(probe, target, self.members) == self.index

    def __call__(self, probe: str, targets: tuple[Target, ...]) -> list[Target]:
        owned = self._owned.setdefault(probe, {})
        for t in targets:
            if t.address not in owned:
                owned[t.address] = self.owns(probe, t.address)
        if len(owned) > 2 * len(targets) + 64:
            # Targets that left the list: forget them, so the table follows the list's size.
            keep = {t.address for t in targets}
            self._owned[probe] = owned = {a: o for a, o in owned.items() if a in keep}
        return [t for t in targets if owned[t.address]]


def worker_config(config: Config, index: int) -> Config:
    """The config worker ``index`` runs: servers on private loopback ports, its own files."""
    surfacers = tuple(_private_surfacer(spec, options, index) for spec, options in config.surfacers)
    status = config.status
    if status is not None:
        status = attrs.evolve(status, host="127.0.0.1", port=0)
    history = config.history
    if history is not None and index:
        history = attrs.evolve(history, path=_suffixed(history.path, index))
    alerts = tuple(_private_alert(alert, index) for alert in config.alerts)
    return attrs.evolve(config, surfacers=surfacers, status=status, history=history, alerts=alerts)


def _private_surfacer(spec: Any, options: Any, index: int) -> tuple[Any, Any]:
    if spec.type == "prometheus":
        return spec, attrs.evolve(options, host="127.0.0.1", port=0)
    if isinstance(options, HasQueueDir) and index:
        # A handoff queue is locked by one process: each worker needs its own.
        queue_dir = _suffixed(options.resolved_queue_dir(), index)
        return spec, attrs.evolve(cast(Any, options), queue_dir=queue_dir)
    return spec, options


def _private_alert(alert: Any, index: int) -> Any:
    if not index:
        return alert
    from ..alerting.notify import default_webhook_dir  # here: alerting is heavy to import
    from ..handoff.disk_queue import default_queue_dir

    changes = {}
    if alert.webhook:
        changes["webhook_queue_dir"] = _suffixed(
            alert.webhook_queue_dir or default_webhook_dir(alert.name), index
        )
    if alert.alertmanager:
        changes["alertmanager_queue_dir"] = _suffixed(
            alert.alertmanager_queue_dir or default_queue_dir(f"alert-{alert.name}-alertmanager"),
            index,
        )
    return attrs.evolve(alert, **changes)


def _suffixed(path: str, index: int) -> str:
    """``queue`` -> ``queue.worker-2``; ``h.sqlite`` -> ``h.worker-2.sqlite``."""
    head, tail = os.path.split(os.path.normpath(path))
    stem, dot, ext = tail.rpartition(".")
    if dot and stem:
        return os.path.join(head, f"{stem}.worker-{index}.{ext}")
    return os.path.join(head, f"{tail}.worker-{index}")


def ready_line(metrics: Sequence[str], status: str | None, pid: int) -> str:
    """The line a worker prints once serving: its private URLs, for the parent."""
    return READY_PREFIX + json.dumps({"metrics": list(metrics), "status": status, "pid": pid})
