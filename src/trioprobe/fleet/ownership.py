"""The ownership filter: which of a probe's targets this agent probes.

Scoring a key costs ~4 µs per member (about 40 µs with 10 members), so the filter never scores a
whole target list on the event loop in one step: it keeps, per probe, a table of which addresses
this agent owns, valid for one member-set generation. A membership change is folded in by
:meth:`Ownership.run` in chunks with a checkpoint between them, while the filter keeps answering
from the previous table (the previous assignment, held a few milliseconds longer). Only
addresses the table has never seen (a new target list) are scored inline, and those are few.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from ..targets import Target
from .membership import Membership
from .rendezvous import Member, key_of, owners

__all__ = ["Ownership"]

# Work between checkpoints, in units of keeping a key (~0.3 µs): scoring one costs ~4 µs per
# member, so about 25 scored keys (10 members) or 3,000 kept ones make ~1 ms.
_STEP_WORK = 3000
_SCORE_COST = 120


class _Table:
    def __init__(self, generation: int, members: Sequence[Member] = ()) -> None:
        self.generation = generation
        #: The live view the entries were scored against (the filter adds a few newer ones,
        #: listed in ``inline``).
        self.members = frozenset(members)
        self.owned: dict[str, bool] = {}
        self.owners: dict[str, tuple[str, ...]] = {}
        self.inline: set[str] = set()


class Ownership:
    """Rendezvous ownership of (probe, target) keys over a :class:`Membership`'s live view."""

    def __init__(self, membership: Membership, replicas: int) -> None:
        self.membership = membership
        self.replicas = replicas
        self.me = membership.info.name
        self._tables: dict[str, _Table] = {}
        self._keys: dict[tuple[str, str], int] = {}
        self._callbacks: list[Callable[[], None]] = []

    def _key(self, probe: str, target: str) -> int:
        key = self._keys.get((probe, target))
        if key is None:
            key = self._keys[(probe, target)] = key_of(probe, target)
        return key

    def owners(self, probe: str, target: str) -> tuple[str, ...]:
        """The live owners of (probe, target), in rendezvous order (the notifier first)."""
        return owners(self._key(probe, target), self.membership.live(), self.replicas)

    def owns(self, probe: str, target: str) -> bool:
        return self.me in self.owners(probe, target)

    def filter(self, probe: str, addresses: Sequence[str]) -> list[str]:
        """The addresses of ``probe`` this agent owns, in their order."""
        table = self._tables.get(probe)
        if table is None:
            generation = self.membership.generation
            table = self._tables[probe] = _Table(generation, self.membership.live())
        owned = table.owned
        # Scored against a newer view than the table's: marked, so a recompute scores it again.
        stale = table.generation != self.membership.generation
        for address in addresses:
            if address not in owned:
                found = table.owners[address] = self.owners(probe, address)
                owned[address] = self.me in found
                if stale:
                    table.inline.add(address)
        if len(owned) > 2 * len(addresses) + 64:
            # Targets that left the list: drop them, so the table follows the list's size.
            keep = set(addresses)
            table.owned = owned = {a: o for a, o in owned.items() if a in keep}
            table.owners = {a: o for a, o in table.owners.items() if a in keep}
            table.inline &= keep
            self._keys = {k: v for k, v in self._keys.items() if k[0] != probe or k[1] in keep}
        return [a for a in addresses if owned[a]]

    def assignments(self) -> dict[str, dict[str, tuple[str, ...]]]:
        """probe -> {target: its owners, in rendezvous order} for every target this agent
        knows, as last computed (the fleet view reads it; nothing is scored for it)."""
        return {probe: table.owners for probe, table in self._tables.items()}

    def count(self) -> int:
        """Targets owned, over every probe (exported as ``trioprobe_fleet_owned_targets``)."""
        return sum(sum(table.owned.values()) for table in self._tables.values())

    def snapshot_filter(self, probe: str, targets: tuple[Target, ...]) -> list[Target]:
        """The targets layer's seam (:data:`trioprobe.targets.SnapshotFilter`)."""
        owned = set(self.filter(probe, [t.address for t in targets]))
        return [t for t in targets if t.address in owned]

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each recomputation (the runner re-applies the filter then)."""
        self._callbacks.append(callback)

    async def run(self) -> None:
        """Recompute the tables whenever the member set changes, until cancelled."""
        while True:
            generation = self.membership.generation
            stale = [p for p, t in list(self._tables.items()) if t.generation != generation]
            for probe in stale:
                await self._recompute(probe)
            if stale and self.membership.generation == generation:
                for callback in self._callbacks:
                    callback()
            await self.membership.wait_changed(generation)

    async def _recompute(self, probe: str) -> None:
        old = self._tables[probe]
        generation = self.membership.generation
        members = self.membership.live()
        fresh = _Table(generation, members)
        # Members only left (a death, a SIGTERM): a key whose owners all stay keeps them (they
        # still rank highest among fewer members), so only the leavers' keys are scored again,
        # about replicas/N of them: the takeover waits for those, not for every key.
        # (Zones: a leaver can change which zones count as unused, so everything is scored.)
        leave_only = fresh.members <= old.members and not any(m.zone for m in old.members)
        kept = {m.name for m in members} if leave_only else None
        work = 0
        for address in list(old.owned):
            previous = old.owners.get(address)
            if (
                kept is not None
                and previous is not None
                and address not in old.inline
                and kept.issuperset(previous)
            ):
                fresh.owners[address] = previous
                fresh.owned[address] = old.owned[address]
                work += 1
            else:
                work += _SCORE_COST
            if work >= _STEP_WORK:
                work = 0
                await trio.lowlevel.checkpoint()
                if self.membership.generation != generation:
                    return  # changed again meanwhile: run() starts over with the newest view
            if address in fresh.owned:
                continue
            found = fresh.owners[address] = owners(
                self._key(probe, address), members, self.replicas
            )
            fresh.owned[address] = self.me in found
        # Addresses the filter added while we worked were scored against the newest view.
        newest = self._tables[probe]
        for address, owned in newest.owned.items():
            if address not in fresh.owned:
                fresh.owned[address] = owned
                fresh.owners[address] = newest.owners[address]
                fresh.inline.add(address)
        self._tables[probe] = fresh
