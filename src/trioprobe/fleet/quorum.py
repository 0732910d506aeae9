"""Agreement between vantage points: the fleet's verdict on a target, and who tells whom.

Each agent publishes, under its own lease, a *down vote* for every target it owns and sees down
(and deletes it when the target comes back): so votes are written only on state changes, and a
dead agent's votes vanish with its lease. Every agent mirrors every vote, so every agent computes
the same verdict from the same etcd state, and the same identity for each firing: the etcd
revision of the vote that completed the quorum (its *epoch*). The notification key is derived from
that epoch, not from local clocks, so whichever agent sends a notice sends it under the same
Idempotency-Key, and a receiver drops the copy a takeover mid-delivery produces.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import attrs

__all__ = ["Verdict", "notice_key", "notifier", "verdict"]


@attrs.frozen
class Verdict:
    """The fleet's view of one target."""

    down: bool
    #: Live owners that vote down.
    votes: int
    #: Votes needed: the alert's quorum, or every live owner when fewer are left.
    needed: int
    #: The revision of the vote that completed the quorum; identifies a firing fleet-wide.
    epoch: int | None = None


def verdict(owners: Sequence[str], down_votes: Mapping[str, int], quorum: int) -> Verdict:
    """The verdict on a target from its live ``owners`` and the down votes (agent -> the
    revision the vote was written at).

    Votes of agents that no longer own the target do not count: an owner that lost the target
    deletes its vote, but until it has, its view is stale. With fewer live owners than
    ``quorum`` (a fleet shrunk below it), every live owner must agree: a fleet must keep
    alerting, not go silent, when it loses members.
    """
    if quorum < 1:
        raise ValueError(f"quorum must be >= 1, got {quorum}")
    needed = min(quorum, len(owners))
    revisions = sorted(down_votes[o] for o in owners if o in down_votes)
    if needed == 0 or len(revisions) < needed:
        return Verdict(False, len(revisions), needed)
    return Verdict(True, len(revisions), needed, revisions[needed - 1])


def notifier(owners: Sequence[str]) -> str | None:
    """The one agent that sends a target's notifications: its first live owner in rendezvous
    order (every agent computes the same one from the same member list)."""
    return owners[0] if owners else None


def notice_key(
    fleet: str, alert: str, probe: str, target: str, event: str, epoch: int, repeat: int = 0
) -> str:
    """The Idempotency-Key of a fleet notice: the same whichever agent computes it.

    A resolve carries the epoch of the firing it ends, so a fire and its resolve pair up.
    """
    ident = json.dumps([fleet, alert, probe, target, event, epoch, repeat])
    return hashlib.sha256(ident.encode()).hexdigest()[:32]
