"""Membership on etcd: one key per live agent, held by the agent's lease.

Keys under ``trioprobe/fleet/<fleet>/``::

    members/<agent>                     JSON AgentInfo, under the agent's lease
    votes/<agent>\\0<probe>\\0<target>    b"down <since>", under the agent's lease, only while down
    acks/<probe>\\0<target>             JSON Ack, no lease (see :mod:`.acks`)

Writes, by design: a lease keep-alive every ``lease_ttl / 3`` seconds per agent (0.3 writes/s at
the default 10 s), plus one write per registration and per vote change. Reads are one prefix
range per (re)connection and one watch stream, so an agent learns of a join, a leave or a vote
within a round trip, not a polling period.

Failure handling:

* etcd unreachable: the member and vote mirror is frozen as last seen (fail-static: the
  ownership computed from it stays, so nothing stops being probed), ``connected`` turns False,
  it is logged once, and the loops retry by themselves until etcd answers again.
* the lease expired while this agent was paused or cut off (a keep-alive answers TTL 0, or the
  watch reports this agent's key deleted): it grants a new lease, registers again and
  re-publishes its votes. Meanwhile it keeps itself in its own view, so it keeps probing its
  last assignment: an etcd that stalls or shuts down can expire every lease at once (a soak run
  saw it, and saw agents that had dropped themselves leave targets unprobed during the outage),
  and monitoring must not stop because the coordinator is down. The cost is double coverage of
  what others took over until they see the new registration: a round trip when etcd answers.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from typing import Any

import attrs
import trio

from ._etcd import EtcdClient, EtcdError, Event, KeyValue
from .acks import Ack, ack_key, ack_parts
from .rendezvous import Member

__all__ = ["AgentInfo", "FleetError", "FleetNameInUse", "Membership", "read_fleet"]

logger = logging.getLogger("trioprobe.fleet")

ROOT = "trioprobe/fleet/"


class FleetError(Exception):
    """The fleet cannot be joined (the message says why, on one line)."""


class FleetNameInUse(FleetError):
    """Another live agent already holds this agent's name."""


@attrs.frozen
class AgentInfo:
    """What an agent registers about itself (``members/<name>``)."""

    name: str
    zone: str = ""
    weight: float = 1.0
    version: str = ""
    #: Wall-clock start time (seconds since the epoch): compared across hosts.
    started: float = 0.0
    metrics_url: str = ""
    status_url: str = ""

    def encode(self) -> bytes:
        return json.dumps(attrs.asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> AgentInfo | None:
        try:
            raw = json.loads(data)
            info = cls(**{f.name: raw[f.name] for f in attrs.fields(cls) if f.name in raw})
            weight = float(info.weight)
        except (ValueError, TypeError, KeyError):
            return None
        if not math.isfinite(weight) or weight < 0:
            return None
        return info


class Membership:
    """This agent's registration, and a mirror of every member and vote of its fleet."""

    def __init__(
        self,
        etcd: EtcdClient,
        fleet: str,
        info: AgentInfo,
        *,
        lease_ttl: float = 10.0,
        retry: float = 1.0,
    ) -> None:
        self.etcd = etcd
        self.fleet = fleet
        self.info = info
        self.lease_ttl = lease_ttl
        self.retry = retry
        self.prefix = f"{ROOT}{fleet}/".encode()
        self._members_prefix = self.prefix + b"members/"
        self._votes_prefix = self.prefix + b"votes/"
        self._acks_prefix = self.prefix + b"acks/"
        #: Whether the last call to etcd succeeded (exported as ``trioprobe_fleet_connected``).
        self.connected = False
        #: Live members as last seen in etcd, with the revision each registered at.
        self.members: dict[str, tuple[AgentInfo, int]] = {}
        #: (probe, target) -> {agent: revision of its down vote}.
        self.votes: dict[tuple[str, str], dict[str, int]] = {}
        #: (probe, target) -> {agent: wall-clock time its view turned down}, from the votes
        #: that carry one: a firing's time and repeat schedule, the same on every agent.
        self.vote_since: dict[tuple[str, str], dict[str, float]] = {}
        #: (probe, target) -> the acknowledgement of its firing (see :mod:`.acks`).
        self.acks: dict[tuple[str, str], Ack] = {}
        #: Grows whenever the live member set changes; the ownership cache is keyed by it.
        self.generation = 0
        #: Registrations after the first (a lease found expired).
        self.reregistrations = 0
        self.lease = 0
        #: Whether this agent holds a live registration (a lease etcd has not expired).
        self._registered = False
        #: Whether this agent counts itself in its own view: from its first registration on,
        #: also while its lease is lost and it registers again (fail-static).
        self._joined = False
        #: The revision of the current registration: an older delete of our key is stale.
        self._registered_at = 0
        self._left = False
        self._changed = trio.Event()
        #: Grows with every change of the mirror (members or votes).
        self.changes = 0
        self._any_change = trio.Event()
        self._wake_keepalive = trio.Event()
        #: (probe, target) -> since (wall clock) of this agent's down votes.
        self._own_votes: dict[tuple[str, str], float] = {}
        self._pending_votes: set[tuple[str, str]] = set()
        self._votes_waiting = trio.Event()
        self._live_cache: tuple[int, list[Member]] = (-1, [])
        #: Whether member deletions were left unapplied while etcd failed this agent's calls.
        self._skipped_leaves = False
        self._watch_scope = trio.CancelScope()

    # --- the view -------------------------------------------------------------------------

    def live(self) -> list[Member]:
        """The live members ownership is computed from: as last seen in etcd, plus this agent
        once it has registered (before the watch has echoed it back, and while it registers
        again after losing its lease)."""
        generation, cached = self._live_cache
        if generation == self.generation:
            return cached
        infos = {name: info for name, (info, _) in self.members.items()}
        if self._joined:
            infos[self.info.name] = self.info
        members = [Member(i.name, i.zone, i.weight) for i in infos.values()]
        self._live_cache = (self.generation, members)
        return members

    async def wait_changed(self, generation: int) -> int:
        """Wait until the member set differs from ``generation``; the new generation."""
        while self.generation == generation:
            await self._changed.wait()
        return self.generation

    async def wait_any_change(self, changes: int) -> int:
        """Wait until a member or a vote changed since ``changes``; the new count."""
        while self.changes == changes:
            await self._any_change.wait()
        return self.changes

    def _touch(self) -> None:
        self.changes += 1
        self._any_change.set()
        self._any_change = trio.Event()

    def _bump(self) -> None:
        self.generation += 1
        self._changed.set()
        self._changed = trio.Event()
        self._touch()

    def _set_connected(self, connected: bool, why: object = None) -> None:
        if connected and not self.connected:
            logger.info("fleet %r: connected to etcd", self.fleet)
            if self._skipped_leaves:
                # Leaves were not applied while etcd failed us: read the whole prefix again.
                self._watch_scope.cancel()
        elif not connected and self.connected:
            # Once per outage: the loops retry quietly until etcd answers again.
            logger.warning(
                "fleet %r: etcd unreachable (%s); probing the last assignment until it is back",
                self.fleet,
                why,
            )
        self.connected = connected

    # --- votes ------------------------------------------------------------------------------

    def set_vote(self, probe: str, target: str, down: bool, since: float = 0.0) -> None:
        """Publish (or withdraw) this agent's down vote; never blocks, coalesces changes.

        ``since`` (wall clock, 0 for none) is when this agent saw the target go down: the vote
        that completes a quorum dates the firing for every agent (its repeat schedule)."""
        key = (probe, target)
        if (key in self._own_votes) == down:
            return
        if down:
            self._own_votes[key] = since
        else:
            self._own_votes.pop(key, None)
        self._pending_votes.add(key)
        self._votes_waiting.set()

    def _vote_key(self, agent: str, probe: str, target: str) -> bytes:
        return self._votes_prefix + "\x00".join((agent, probe, target)).encode()

    async def _vote_writer(self) -> None:
        while True:
            await self._votes_waiting.wait()
            self._votes_waiting = trio.Event()
            while self._pending_votes and self._registered:
                key = self._pending_votes.pop()
                etcd_key = self._vote_key(self.info.name, *key)
                try:
                    if key in self._own_votes:
                        value = _vote_value(self._own_votes[key])
                        await self.etcd.put(etcd_key, value, self.lease)
                    else:
                        await self.etcd.delete(etcd_key)
                except EtcdError as exc:
                    self._pending_votes.add(key)
                    self._set_connected(False, exc)
                    await trio.sleep(self.retry)

    # --- acknowledgements -------------------------------------------------------------------

    async def put_ack(self, probe: str, target: str, ack: Ack) -> None:
        """Store ``ack`` (no lease: it outlives this agent); :class:`EtcdError` if etcd does not
        take it. Mirrored at once, so this agent's own view has it before the watch's echo."""
        revision = await self.etcd.put(ack_key(self._acks_prefix, probe, target), ack.encode())
        self.acks[(probe, target)] = attrs.evolve(ack, mod_revision=revision)
        self._touch()

    async def drop_ack(self, probe: str, target: str, ack: Ack) -> None:
        """Delete ``ack`` if it is still the one stored (a newer acknowledgement is kept)."""
        await self.etcd.delete_if(ack_key(self._acks_prefix, probe, target), ack.mod_revision)

    # --- registration and lease ------------------------------------------------------------

    async def _register(self, *, first: bool) -> None:
        lease = await self.etcd.grant(max(1, math.ceil(self.lease_ttl)))
        key = self._members_prefix + self.info.name.encode()
        revision = await self.etcd.create(key, self.info.encode(), lease)
        if not revision:
            await self.etcd.revoke(lease)
            raise FleetNameInUse(
                f"agent name {self.info.name!r} is already live in fleet {self.fleet!r}; "
                f"give this agent another name, or wait for the other one's lease "
                f"({self.lease_ttl:g}s) to expire"
            )
        self.lease = lease
        self._registered_at = revision
        self._registered = True
        self._joined = True
        self._bump()
        if not first:
            self.reregistrations += 1
            # The old lease took this agent's votes with it: publish them again.
            self._pending_votes.update(self._own_votes)
            self._votes_waiting.set()

    async def start(self) -> None:
        """Register, retrying while etcd is unreachable for up to ``lease_ttl`` seconds.

        Raises :class:`FleetNameInUse`, or :class:`FleetError` if etcd never answered.
        """
        last: EtcdError | None = None
        with trio.move_on_after(max(self.lease_ttl, self.etcd.timeout)):
            while True:
                try:
                    await self._register(first=True)
                except EtcdError as exc:
                    last = exc
                    await trio.sleep(self.retry)
                    continue
                self._set_connected(True)
                return
        raise FleetError(f"fleet {self.fleet!r}: cannot register with etcd: {last}")

    async def _keepalive_loop(self) -> None:
        """Renew the lease every ``lease_ttl / 3`` seconds, counted from each renewal's start.

        Counted from the start, not the end: a renewal slowed by a busy etcd or by this
        process's own event-loop lag (soak runs measured 1-3 s per call at load 15 on 2 cores)
        must not push the next one further out, or two slow ones in a row let a short lease
        expire. A failed renewal is tried again after a fraction of the period while the lease
        may still be alive, and once a period after that (an outage costs no more calls).
        """
        period = self.lease_ttl / 3
        renewed = trio.current_time()
        due = renewed + period
        while not self._left:
            with trio.move_on_at(due):
                await self._wake_keepalive.wait()
            self._wake_keepalive = trio.Event()
            if self._left:
                return
            started = trio.current_time()
            due = started + period
            try:
                if self._registered and await self.etcd.keepalive(self.lease) > 0:
                    renewed = started
                    self._set_connected(True)
                    continue
                self._lose_lease()
                await self._register(first=False)
                renewed = started
                self._set_connected(True)
            except FleetNameInUse as exc:
                logger.error("fleet %r: %s; retrying", self.fleet, exc)
            except EtcdError as exc:
                self._set_connected(False, exc)
                if self._registered and trio.current_time() - renewed < self.lease_ttl:
                    due = min(due, trio.current_time() + period / 4)

    def _lose_lease(self) -> None:
        """Our lease is gone: register again (the keep-alive loop does), keeping our view."""
        if self._registered:
            self._registered = False
            logger.warning(
                "fleet %r: the lease of agent %r expired (paused, cut off, or etcd stalled); "
                "registering again, probing the last assignment meanwhile",
                self.fleet,
                self.info.name,
            )
        self.members.pop(self.info.name, None)

    async def leave(self) -> None:
        """Revoke the lease, so the others take this agent's targets over at once (lameduck).

        Bounded: with etcd unreachable, the lease simply expires after ``lease_ttl``.
        """
        self._left = True
        self._wake_keepalive.set()
        if not self._registered:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(self.etcd.timeout):
            try:
                await self.etcd.revoke(self.lease)
            except EtcdError as exc:
                logger.warning("fleet %r: could not revoke the lease: %s", self.fleet, exc)
        # This agent's own view keeps itself: its probes are stopping anyway, and dropping its
        # targets now would empty the final export of what it probed.

    # --- the mirror -------------------------------------------------------------------------

    async def _watch_loop(self, *, task_status: trio.TaskStatus[None]) -> None:
        started = False
        while True:
            try:
                revision, kvs = await self.etcd.range_prefix(self.prefix)
                if not self._reset(kvs):
                    await trio.sleep(self.retry)
                    continue  # the keep-alive decides whether our lease is gone; read again
                self._skipped_leaves = False
                self._set_connected(True)
                if not started:
                    task_status.started()
                    started = True
                async with self.etcd.watch(self.prefix, revision + 1) as watch:
                    with trio.CancelScope() as self._watch_scope:
                        while True:
                            self._apply(await watch.next_batch())
                continue  # etcd answers again after skipped leaves: mirror it afresh
            except EtcdError as exc:
                self._set_connected(False, exc)
            if not started:
                # Ownership works from this agent alone until the member list can be read.
                task_status.started()
                started = True
            await trio.sleep(self.retry)

    def _reset(self, kvs: Iterable[KeyValue]) -> bool:
        """Mirror a whole range reply; ``False`` (nothing changed) for one without this agent's
        key while it holds a registration.

        Such a reply means the lease expired while we could not see it, or comes from an etcd
        going down (a soak run once saw every agent stop probing during an etcd outage, as if
        each had dropped itself and its peers). The keep-alive is the authority on our lease:
        it is asked at once, and drops this agent and registers again if the lease is gone.
        """
        kvs = list(kvs)
        own = self._members_prefix + self.info.name.encode()
        if self._registered and not any(kv.key == own for kv in kvs):
            self._wake_keepalive.set()
            return False
        before = set(self.members)
        self.members = {}
        self.votes = {}
        self.vote_since = {}
        self.acks = {}
        for kv in kvs:
            self._put(kv)
        if set(self.members) != before:
            self._bump()
        self._touch()
        return True

    def _apply(self, events: list[Event]) -> None:
        changed = False
        for event in events:
            key = event.kv.key
            if key.startswith(self._members_prefix):
                name = key[len(self._members_prefix) :].decode(errors="replace")
                changed = True
                if not event.deleted:
                    self._put(event.kv)
                elif name == self.info.name and event.kv.mod_revision > self._registered_at:
                    self.members.pop(name, None)
                    if not self._left:
                        self._lose_lease()
                        self._wake_keepalive.set()
                elif not self.connected:
                    # etcd fails our own calls: a shutdown or a stall that expires every lease,
                    # not these agents dying. Keep the view (fail-static; a soak run saw agents
                    # take over every target as etcd stopped); it is read afresh once etcd
                    # answers again.
                    self._skipped_leaves = True
                else:
                    self.members.pop(name, None)
            elif event.deleted:
                self._drop_vote(key)
                pair = ack_parts(self._acks_prefix, key)
                if pair is not None:
                    self.acks.pop(pair, None)
            else:
                self._put(event.kv)
        if changed:
            self._bump()
        self._touch()

    def _put(self, kv: KeyValue) -> None:
        if kv.key.startswith(self._members_prefix):
            info = AgentInfo.decode(kv.value)
            if info is not None:
                self.members[info.name] = (info, kv.mod_revision)
            return
        pair = ack_parts(self._acks_prefix, kv.key)
        if pair is not None:
            ack = Ack.decode(kv.value, kv.mod_revision)
            if ack is not None:
                self.acks[pair] = ack
            return
        parts = self._vote_parts(kv.key)
        if parts is not None:
            agent, probe, target = parts
            self.votes.setdefault((probe, target), {})[agent] = kv.mod_revision
            since = _vote_since(kv.value)
            if since:
                self.vote_since.setdefault((probe, target), {})[agent] = since

    def _drop_vote(self, key: bytes) -> None:
        parts = self._vote_parts(key)
        if parts is None:
            return
        agent, probe, target = parts
        pair = (probe, target)
        votes = self.votes.get(pair)
        if votes is not None:
            votes.pop(agent, None)
            if not votes:
                del self.votes[pair]
        times = self.vote_since.get(pair)
        if times is not None:
            times.pop(agent, None)
            if not times:
                del self.vote_since[pair]

    def _vote_parts(self, key: bytes) -> tuple[str, str, str] | None:
        if not key.startswith(self._votes_prefix):
            return None
        parts = key[len(self._votes_prefix) :].decode(errors="replace").split("\x00", 2)
        return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None

    # --- running ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register (raising :class:`FleetNameInUse` or :class:`FleetError`), then keep the
        lease, the mirror and the votes up to date until cancelled."""
        await self.start()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keepalive_loop)
            nursery.start_soon(self._vote_writer)
            await nursery.start(self._watch_loop)
            task_status.started()


def _vote_value(since: float) -> bytes:
    return f"down {since:.6f}".encode() if since > 0 else b"down"


def _vote_since(value: bytes) -> float:
    """The time in a vote's value; 0 for none (a bare ``down``, as older agents write)."""
    _, _, rest = value.partition(b" ")
    try:
        since = float(rest) if rest else 0.0
    except ValueError:
        return 0.0
    return since if math.isfinite(since) and since > 0 else 0.0


async def read_fleet(etcd: EtcdClient, fleet: str, *, max_votes: int = 1000) -> dict[str, Any]:
    """A fleet's live members (with their lease's time left) and down votes, as JSON-ready data.

    One range of the fleet's prefix and one lease query per member; at most ``max_votes`` votes
    are listed (``votes_total`` says how many there are), so a page or a terminal stays bounded.
    """
    view = Membership(etcd, fleet, AgentInfo("\x00reader"))
    revision, kvs = await etcd.range_prefix(view.prefix)
    leases = {kv.key: kv.lease for kv in kvs}
    view._reset(kvs)
    members = []
    for name, (info, registered) in sorted(view.members.items()):
        key = view._members_prefix + name.encode()
        lease = leases.get(key, 0)
        left = await etcd.time_to_live(lease) if lease else None
        members.append({**attrs.asdict(info), "registered": registered, "lease_left": left})
    votes = [
        {"probe": probe, "target": target, "agents": sorted(agents)}
        for (probe, target), agents in sorted(view.votes.items())
    ]
    return {
        "fleet": fleet,
        "revision": revision,
        "members": members,
        "down": votes[:max_votes],
        "votes_total": len(votes),
    }
