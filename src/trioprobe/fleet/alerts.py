"""Alerts agreed between vantage points, sent by exactly one agent.

In a fleet, an agent's own health transitions are *votes*, not notifications: each is published
under the agent's lease (:meth:`Membership.set_vote`). Every agent mirrors every vote and
evaluates the fleet's verdict of each voted-on target (:func:`~.quorum.verdict`); a firing
starts when the verdict turns down and ends when it turns up again. Only the target's notifier
(its first live owner) sends, under a key derived from the firing's epoch, so every agent would
send the same key: when the notifier changes while a target is firing (it died, perhaps
mid-delivery), the new one sends the fire notice again and the receiver drops the duplicate.

Every agent keeps every firing's whole state (not only the notifier), so a new notifier carries
on where the old one stopped:

* **Holds.** A fire that ``depends_on`` or a maintenance window holds is not sent; the firing is
  kept as *held*, and :meth:`FleetAlerts.tick` (once per probe interval, as without a fleet)
  releases it when the hold is over: the notifier sends the fire then, under the firing's key.
  A firing that resolves while held sends nothing at all. A dependency is judged from the
  fleet's verdicts (:attr:`FleetAlerts.agreed_down`, :mod:`.depends`), not this agent's view.
* **Repeats.** A released firing is re-notified at ``since + k * repeat_interval`` (k = 1, 2
  ...), ``since`` being the time in the vote that completed the quorum: the same instants, and
  the same key for repeat k, on every agent. A repeat is skipped while held.
* **Acknowledgements.** ``POST /api/v1/alerts/{id}/ack`` on any agent stores an acknowledgement
  of the firing in etcd (:mod:`.acks`); every agent mirrors it, and the notifier, whichever agent
  it is or becomes, sends no repeat of an acknowledged firing. The firing's id is its fire
  notice's key, the same on every agent, so ``GET /api/v1/alerts`` lists the same ids
  everywhere (the fleet's firings as this agent's mirror has them).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import attrs
import trio

from ..alerting.api import AckError
from ..alerting.notify import Event, Notice
from ..alerting.state import DOWN, UP, State, Transition
from ._etcd import EtcdError
from .acks import Ack
from .membership import Membership
from .ownership import Ownership
from .quorum import Verdict, notice_key, notifier, verdict

__all__ = ["FleetAlerts", "FleetNotice"]

logger = logging.getLogger("trioprobe.fleet")

# Verdicts evaluated between checkpoints (each costs a rendezvous ranking, ~40 µs at 10 agents).
_CHUNK = 25

HoldFn = Callable[[str, str, str], str | None]


@attrs.frozen
class FleetNotice(Notice):
    """A notice whose Idempotency-Key is the fleet's (the same whichever agent sends it)."""

    fleet_key: str = ""

    @property
    def key(self) -> str:
        return self.fleet_key


@attrs.define
class _Firing:
    epoch: int
    notifier: str | None
    transition: Transition
    #: Whether the fire was sent: False while a dependency or maintenance window holds it.
    released: bool = True
    #: The k of the last repeat instant passed (``since + k * repeat_interval``).
    repeats: int = 0


def _no_hold(alert: str, probe: str, target: str) -> str | None:
    return None


class FleetAlerts:
    """Turns local transitions into votes, and the fleet's verdicts into notices.

    Args:
        rule_of: probe name -> (alert name, quorum); an empty alert name means no alert.
        send: hands a notice to the named alert's notifiers.
        hold: (alert, probe, target) -> why its notices are held now (``depends_on``,
            maintenance), or ``None``.
        repeat_interval: alert name -> seconds between repeats (0: none).
        now: the wall clock (a test's follows Trio's).
    """

    def __init__(
        self,
        membership: Membership,
        ownership: Ownership,
        rule_of: Callable[[str], tuple[str, int]],
        send: Callable[[str, Notice], None],
        *,
        hold: HoldFn = _no_hold,
        repeat_interval: Callable[[str], float] = lambda alert: 0.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.membership = membership
        self.ownership = ownership
        self.rule_of = rule_of
        self.send = send
        self.hold = hold
        self.repeat_interval = repeat_interval
        self.now = now
        self.me = membership.info.name
        #: (probe, target) -> the firing the fleet agrees on.
        self.firing: dict[tuple[str, str], _Firing] = {}
        #: Notices this agent sent, by event (for tests and the status view).
        self.sent: dict[str, int] = {"fire": 0, "resolve": 0, "repeat": 0}
        #: probe -> its targets the fleet agrees are down (each probe's own quorum: the
        #: alert's watching it, 1 for a probe no alert watches), as of the last evaluation;
        #: ``depends_on`` is judged from it (:mod:`.depends`).
        self.agreed_down: dict[str, set[str]] = {}
        self._local: dict[tuple[str, str], Transition] = {}
        #: Acknowledgements of resolved firings this agent (their notifier) is to delete.
        self._stale_acks: dict[tuple[str, str], Ack] = {}
        self._stale_waiting = trio.Event()

    def local(self, transition: Transition) -> None:
        """This agent's own view of a target changed: publish it as a vote."""
        key = (transition.probe, transition.target)
        self._local[key] = transition
        down = transition.new == DOWN and transition.reason == "result"
        self.membership.set_vote(transition.probe, transition.target, down, transition.since)
        if not down and transition.new != DOWN:
            self._local.pop(key, None)

    def held(self) -> dict[tuple[str, str], str]:
        """Firings whose fire is held, and why (for the alerts API)."""
        out: dict[tuple[str, str], str] = {}
        for key, firing in self.firing.items():
            why = None if firing.released else self.hold(firing.transition.alert, *key)
            if why is not None:
                out[key] = why
        return out

    def listing(self) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        """The fleet's firing alerts and held fires as this agent knows them, in the alerts
        API's shape (``GET /api/v1/alerts``); ids are the same on every agent."""
        firing: list[dict[str, object]] = []
        for (probe, target), f in sorted(self.firing.items()):
            if not f.released:
                continue
            firing.append(
                {
                    "id": self._fire_key(f),
                    "alert": f.transition.alert,
                    "probe": probe,
                    "target": target,
                    "since": f.transition.since,
                    "acknowledged": self._acked((probe, target), f) is not None,
                    "notifier": f.notifier,
                }
            )
        held: list[dict[str, object]] = [
            {"probe": p, "target": t, "held": why} for (p, t), why in sorted(self.held().items())
        ]
        return firing, held

    async def acknowledge(self, ident: str) -> bool:
        """Acknowledge the firing whose id (fire notice key) is ``ident``, fleet-wide: whether
        this agent knows such a firing. Raises :class:`AckError` when etcd does not take it
        (the caller answers 503: an acknowledgement must not be dropped silently)."""
        for key, firing in list(self.firing.items()):
            if not firing.released or self._fire_key(firing) != ident:
                continue
            ack = Ack(firing.epoch, self.me, self.now())
            try:
                await self.membership.put_ack(*key, ack)
            except EtcdError as exc:
                raise AckError(f"etcd did not store it: {exc}") from exc
            logger.info("alert on probe %r target %r acknowledged fleet-wide", *key)
            return True
        return False

    async def run(self) -> None:
        """Evaluate the verdicts whenever the mirror changes, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._drop_stale_acks)
            changes = -1
            while True:
                changes = await self.membership.wait_any_change(changes)
                await self.evaluate()

    async def _drop_stale_acks(self) -> None:
        """Delete the acknowledgements of firings this agent resolved (retrying while etcd
        fails: a delete left undone costs one small key, never a silenced firing)."""
        while True:
            await self._stale_waiting.wait()
            self._stale_waiting = trio.Event()
            while self._stale_acks:
                key, ack = next(iter(self._stale_acks.items()))
                try:
                    await self.membership.drop_ack(*key, ack)
                except EtcdError:
                    await trio.sleep(self.membership.retry)
                    continue
                if self._stale_acks.get(key) == ack:
                    del self._stale_acks[key]

    async def evaluate(self) -> None:
        """Judge every voted-on (or firing) target, then act on the verdicts.

        Two passes: every verdict is known (:attr:`agreed_down`) before any firing starts, so
        a dependency and its dependent that turn down in the same batch of votes hold the
        dependent's fire whichever sorts first."""
        votes = self.membership.votes
        keys = sorted(set(votes) | set(self.firing))
        judged: list[tuple[str, tuple[str, ...], Verdict]] = []
        down: dict[str, set[str]] = {}
        for i, (probe, target) in enumerate(keys):
            if i and i % _CHUNK == 0:
                await trio.lowlevel.checkpoint()
            alert, quorum = self.rule_of(probe)
            owners = self.ownership.owners(probe, target)
            v = verdict(owners, votes.get((probe, target), {}), quorum)
            judged.append((alert, owners, v))
            if v.down:
                down.setdefault(probe, set()).add(target)
        self.agreed_down = down
        for i, (key, (alert, owners, v)) in enumerate(zip(keys, judged, strict=True)):
            if i and i % (4 * _CHUNK) == 0:
                await trio.lowlevel.checkpoint()
            if alert:
                self._evaluate(key, alert, owners, v)

    def _evaluate(
        self, key: tuple[str, str], alert: str, owners: tuple[str, ...], v: Verdict
    ) -> None:
        probe, target = key
        first = notifier(owners)
        firing = self.firing.get(key)
        if v.down and v.epoch is not None and firing is None:
            since = self._since(key, self.membership.votes.get(key, {}), v.epoch)
            transition = self._transition(alert, probe, target, UP, DOWN, since)
            released = self.hold(alert, probe, target) is None
            firing = self.firing[key] = _Firing(v.epoch, first, transition, released)
            firing.repeats = self._due(alert, firing)
            if released:
                self._notify(first, "fire", firing)
        elif v.down and firing is not None and firing.notifier != first:
            # A new notifier (the old one died, perhaps mid-delivery): send again, same keys.
            firing.notifier = first
            if firing.released:
                self._notify(first, "fire", firing)
                if firing.repeats and self._may_repeat(key, firing):
                    self._notify(first, "repeat", firing, firing.repeats)
        elif not v.down and firing is not None:
            del self.firing[key]
            ack = self._acked(key, firing)
            if ack is not None and first == self.me:
                self._stale_acks[key] = ack
                self._stale_waiting.set()
            if firing.released:  # a fire nobody was told of needs no resolve
                transition = self._transition(alert, probe, target, DOWN, UP, self.now())
                self._notify(first, "resolve", attrs.evolve(firing, transition=transition))

    def tick(self, probe: str) -> None:
        """Release the held fires of ``probe`` whose hold is over, and send the repeats that
        are due (the alerting service calls it once per probe interval, as it checks its own)."""
        for key, firing in list(self.firing.items()):
            if key[0] != probe:
                continue
            alert = firing.transition.alert
            held = self.hold(alert, *key) is not None
            due = self._due(alert, firing)
            if not firing.released:
                if not held:
                    firing.released = True
                    # The next repeat comes at the next instant of the firing's schedule.
                    firing.repeats = due
                    self._notify(firing.notifier, "fire", firing)
            elif due > firing.repeats:
                firing.repeats = due
                if not held and self._acked(key, firing) is None:
                    self._notify(firing.notifier, "repeat", firing, due)

    def _acked(self, key: tuple[str, str], firing: _Firing) -> Ack | None:
        """The acknowledgement of ``firing`` (one of an earlier firing does not count)."""
        ack = self.membership.acks.get(key)
        return ack if ack is not None and ack.epoch == firing.epoch else None

    def _may_repeat(self, key: tuple[str, str], firing: _Firing) -> bool:
        alert = firing.transition.alert
        return self.hold(alert, *key) is None and self._acked(key, firing) is None

    def _fire_key(self, firing: _Firing) -> str:
        t = firing.transition
        return notice_key(self.membership.fleet, t.alert, t.probe, t.target, "fire", firing.epoch)

    def _due(self, alert: str, firing: _Firing) -> int:
        """How many repeat instants of ``firing`` have passed (0 without repeats)."""
        interval = self.repeat_interval(alert)
        if interval <= 0:
            return 0
        return max(0, math.floor((self.now() - firing.transition.since) / interval))

    def _since(self, key: tuple[str, str], votes: dict[str, int], epoch: int) -> float:
        """The time in the vote that completed the quorum (now, if it carries none)."""
        times = self.membership.vote_since.get(key, {})
        for agent, revision in votes.items():
            if revision == epoch and agent in times:
                return times[agent]
        return self.now()

    def _transition(
        self, alert: str, probe: str, target: str, old: State, new: State, since: float
    ) -> Transition:
        local = self._local.get((probe, target))
        return Transition(
            probe,
            target,
            old,
            new,
            since,
            local.failures if local is not None else 0,
            local.total if local is not None else 0,
            local.error if local is not None else None,
            alert=alert,
        )

    def _notify(self, first: str | None, event: Event, firing: _Firing, repeat: int = 0) -> None:
        if first != self.me:
            return
        t = firing.transition
        key = notice_key(
            self.membership.fleet, t.alert, t.probe, t.target, event, firing.epoch, repeat
        )
        self.sent[event] += 1
        self.send(t.alert, FleetNotice(event, t, repeat=repeat, fleet_key=key))
