"""Alerts agreed between vantage points, sent by exactly one agent.

In a fleet, an agent's own health transitions are *votes*, not notifications: each is published
under the agent's lease (:meth:`Membership.set_vote`). Every agent mirrors every vote and
evaluates the fleet's verdict of each voted-on target (:func:`~.quorum.verdict`); a firing
starts when the verdict turns down and ends when it turns up again. Only the target's notifier
(its first live owner) sends, under a key derived from the firing's epoch, so every agent would
send the same key: when the notifier changes while a target is firing (it died, perhaps
mid-delivery), the new one sends the fire notice again and the receiver drops the duplicate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs
import trio

from ..alerting.notify import Event, Notice
from ..alerting.state import DOWN, UP, State, Transition
from .membership import Membership
from .ownership import Ownership
from .quorum import notice_key, notifier, verdict

__all__ = ["FleetAlerts", "FleetNotice"]

# Verdicts evaluated between checkpoints (each costs a rendezvous ranking, ~40 µs at 10 agents).
_CHUNK = 25


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


class FleetAlerts:
    """Turns local transitions into votes, and the fleet's verdicts into notices.

    Args:
        rule_of: probe name -> (alert name, quorum); an empty alert name means no alert.
        send: hands a notice to the named alert's notifiers.
    """

    def __init__(
        self,
        membership: Membership,
        ownership: Ownership,
        rule_of: Callable[[str], tuple[str, int]],
        send: Callable[[str, Notice], None],
    ) -> None:
        self.membership = membership
        self.ownership = ownership
        self.rule_of = rule_of
        self.send = send
        self.me = membership.info.name
        #: (probe, target) -> the firing the fleet agrees on.
        self.firing: dict[tuple[str, str], _Firing] = {}
        #: Notices this agent sent, by event (for tests and the status view).
        self.sent: dict[str, int] = {"fire": 0, "resolve": 0, "repeat": 0}
        self._local: dict[tuple[str, str], Transition] = {}

    def local(self, transition: Transition) -> None:
        """This agent's own view of a target changed: publish it as a vote."""
        key = (transition.probe, transition.target)
        self._local[key] = transition
        down = transition.new == DOWN and transition.reason == "result"
        self.membership.set_vote(transition.probe, transition.target, down)
        if not down and transition.new != DOWN:
            self._local.pop(key, None)

    async def run(self) -> None:
        """Evaluate the verdicts whenever the mirror changes, until cancelled."""
        changes = -1
        while True:
            changes = await self.membership.wait_any_change(changes)
            await self.evaluate()

    async def evaluate(self) -> None:
        votes = self.membership.votes
        keys = set(votes) | set(self.firing)
        for i, key in enumerate(sorted(keys)):
            if i and i % _CHUNK == 0:
                await trio.lowlevel.checkpoint()
            self._evaluate(key, votes.get(key, {}))

    def _evaluate(self, key: tuple[str, str], votes: dict[str, int]) -> None:
        probe, target = key
        alert, quorum = self.rule_of(probe)
        if not alert:
            return
        owners = self.ownership.owners(probe, target)
        v = verdict(owners, votes, quorum)
        first = notifier(owners)
        firing = self.firing.get(key)
        if v.down and v.epoch is not None and firing is None:
            transition = self._transition(alert, probe, target, UP, DOWN)
            self.firing[key] = _Firing(v.epoch, first, transition)
            self._notify(first, "fire", alert, transition, v.epoch)
        elif v.down and firing is not None and firing.notifier != first:
            # A new notifier (the old one died, perhaps mid-delivery): send again, same key.
            firing.notifier = first
            self._notify(first, "fire", alert, firing.transition, firing.epoch)
        elif not v.down and firing is not None:
            del self.firing[key]
            transition = self._transition(alert, probe, target, DOWN, UP)
            self._notify(first, "resolve", alert, transition, firing.epoch)

    def _transition(
        self, alert: str, probe: str, target: str, old: State, new: State
    ) -> Transition:
        local = self._local.get((probe, target))
        return Transition(
            probe,
            target,
            old,
            new,
            time.time(),
            local.failures if local is not None else 0,
            local.total if local is not None else 0,
            local.error if local is not None else None,
            alert=alert,
        )

    def _notify(
        self, first: str | None, event: Event, alert: str, transition: Transition, epoch: int
    ) -> None:
        if first != self.me:
            return
        t = transition
        key = notice_key(self.membership.fleet, alert, t.probe, t.target, event, epoch)
        self.sent[event] += 1
        self.send(alert, FleetNotice(event, transition, fleet_key=key))
