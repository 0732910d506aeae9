"""Rendezvous (highest-random-weight) ownership of (probe, target) keys.

Every agent computes the same owners from the same member list, with no coordination: each
member scores each key, and the ``replicas`` highest scores own it. A member joining or leaving
moves only the keys it wins or held (about 1/N of them), which is why rendezvous hashing is used
rather than ``hash mod N`` (which moves almost everything).

Weights use the standard weighted-rendezvous score ``-w / ln(h)`` with ``h`` uniform in (0, 1):
a member of weight ``w`` wins a share ``w / sum(w)`` of the keys, exactly, and still moves only
its own share when the weights change.

Zones: the owners are taken in score order, but a member whose zone already holds a replica is
skipped while an unused zone remains; so with ``replicas = 2`` over two zones, a zone outage never
takes both owners of a key. Members without a zone each count as a zone of their own.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Iterable, Sequence

import attrs

__all__ = ["Member", "key_of", "owners", "rank"]

_M64 = (1 << 64) - 1


@attrs.frozen
class Member:
    """One live agent as the ownership rule sees it."""

    name: str
    zone: str = ""
    weight: float = 1.0
    #: A 64-bit digest of the name, computed once: scoring a key is then integer arithmetic.
    seed: int = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "seed", _digest(self.name.encode()))


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def key_of(probe: str, target: str) -> int:
    """The 64-bit hash of a (probe, target) key; computed once per key, not once per member."""
    return _digest(probe.encode() + b"\x00" + target.encode())


def _mix(x: int) -> int:
    # splitmix64's finaliser: combining the key and member digests must not leave the
    # correlation a plain XOR would (two members' scores of one key must be independent).
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def score(member: Member, key: int) -> float:
    """The weighted rendezvous score ``-w / ln(h)``, ``h`` the member's hash of the key."""
    h = ((_mix(key ^ member.seed) >> 11) + 0.5) * _UNIT
    return -member.weight / math.log(h)


_UNIT = 1.0 / float(1 << 53)


def rank(key: int, members: Iterable[Member]) -> list[Member]:
    """Every member, best score first (ties, which practically never happen: by name)."""
    return sorted(members, key=lambda m: (score(m, key), m.name), reverse=True)


def owners(key: int, members: Sequence[Member], replicas: int) -> tuple[str, ...]:
    """The names of the ``replicas`` owners of ``key``, in rendezvous order (the first one is the
    key's notifier), spread over distinct zones while unused zones remain."""
    live = [m for m in members if m.weight > 0]
    if not any(m.zone for m in live):
        # The hot path (thousands of keys per membership change): no sort of every member.
        scored = [(score(m, key), m.name) for m in live]
        if replicas == 1:
            return (max(scored)[1],) if scored else ()
        return tuple(name for _, name in heapq.nlargest(replicas, scored))
    ranked = rank(key, live)
    if replicas >= len(ranked):
        return tuple(m.name for m in ranked)
    chosen: list[Member] = []
    zones: set[str] = set()
    zone_count = len({m.zone or f"\x00{m.name}" for m in ranked})
    for member in ranked:
        if len(chosen) == replicas:
            break
        zone = member.zone or f"\x00{member.name}"
        if zone in zones and len(zones) < zone_count:
            continue  # once every zone holds a replica, the best-ranked left are taken
        chosen.append(member)
        zones.add(zone)
    return tuple(m.name for m in chosen)
