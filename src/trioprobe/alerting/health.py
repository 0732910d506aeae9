"""``Health``: every probe x target's state, and the ways to follow it from a Trio app.

Results come in through :meth:`Health.feed` (the runner calls it from each probe's stats keeper,
the one task that owns that probe's results) or :meth:`Health.track` (an owner task of its own,
for a channel of results, or of the standalone :class:`~trioprobe.probing.Prober`'s records).
Everything here is synchronous state changed without an ``await`` in between, by one task per
probe, so no locks are needed. What the state changes produce goes out without blocking that task:

* :meth:`Health.subscribe` gives a memory channel of :class:`Transition` values; a subscriber
  that falls ``buffer`` transitions behind loses the newest ones (counted in ``dropped``);
* :meth:`Health.wait_until` returns when a target reaches a state;
* listeners (the alerting service's notifiers) are called synchronously with each transition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping

import attrs
import trio

from .._groups import open_nursery
from .._ticks import Ticker
from ..probes.etcd_probing import probe_result
from ..probing import ProbeRecord
from ..results import ProbeResult
from .history import History
from .state import DOWN, UNKNOWN, UP, AlertRule, State, TargetHealth, Transition

__all__ = ["Health", "TargetStatus"]

logger = logging.getLogger("trioprobe.alerting")

_STATES = (UNKNOWN, UP, DOWN)


@attrs.frozen
class TargetStatus:
    """A read-only snapshot of one probe x target, as the status page shows it."""

    probe: str
    target: str
    state: State
    since: float
    alert: str
    failures: int
    total: int
    error: str | None
    transitions: int
    #: The last failure's reason (``Failure.label``, or ``latency``), if any.
    failure: str | None = None


class _Entry:
    __slots__ = ("health", "history")

    def __init__(self, health: TargetHealth) -> None:
        self.health = health
        self.history = History()


class Health:
    """Health state of every probe's targets.

    Args:
        rules: the rule for each probe name; probes not listed use ``default``.
        default: the rule of unlisted probes (down after 3 failures, up after 2 successes).
    """

    def __init__(
        self, rules: Mapping[str, AlertRule] | None = None, default: AlertRule | None = None
    ) -> None:
        self.rules = dict(rules or {})
        self.default = default or AlertRule()
        # probe -> target -> entry: per probe, so a sweep of one probe's targets costs that
        # probe's size, not everyone's.
        self._entries: dict[str, dict[str, _Entry]] = {}
        self._subscribers: list[trio.MemorySendChannel[Transition]] = []
        self._waiters: list[tuple[str, State, str | None, trio.Event]] = []
        self._listeners: list[Callable[[Transition], None]] = []
        #: Transitions a subscriber was too far behind to take.
        self.dropped = 0

    def rule_for(self, probe: str) -> AlertRule:
        return self.rules.get(probe, self.default)

    # -- input ----------------------------------------------------------------------------------
    def feed(self, probe: str, result: ProbeResult) -> Transition | None:
        """Evaluate one result of ``probe`` (call it from that probe's one owner task)."""
        entries = self._entries.setdefault(probe, {})
        entry = entries.get(result.target)
        if entry is None:
            entry = entries[result.target] = _Entry(
                TargetHealth(probe, result.target, self.rule_for(probe), result.timestamp)
            )
        entry.history.add(trio.current_time(), result.success, result.latency)
        transition = entry.health.feed(result)
        if transition is not None:
            self._emit(transition)
        return transition

    def set_burn_rates(self, rates: Mapping[tuple[str, str], Mapping[str, float | None]]) -> None:
        """The SLO burn rates of (probe, target)s, by window, from the history; an alert's
        ``burn_rate_above`` condition reads them at the target's next result."""
        for (probe, target), by_window in rates.items():
            entry = self._entries.get(probe, {}).get(target)
            if entry is not None:
                entry.health.burn_rates = dict(by_window)

    def set_targets(self, probe: str, targets: Iterable[str]) -> list[Transition]:
        """``probe``'s current target list: targets no longer in it are dropped, resolving their
        alerts (their state and history are forgotten, so memory follows the target list)."""
        keep = set(targets)
        entries = self._entries.get(probe, {})
        gone = [target for target in entries if target not in keep]
        out = []
        for target in gone:
            transition = entries.pop(target).health.remove(time.time())
            if transition is not None:
                out.append(transition)
                self._emit(transition)
        return out

    async def track(
        self,
        probe: str,
        results: trio.MemoryReceiveChannel[ProbeResult | ProbeRecord],
        *,
        targets: Callable[[], Iterable[str]] | None = None,
        sweep_interval: float = 1.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Own ``results`` (a probe's channel) until it ends: feed each result in.

        A :class:`~trioprobe.probing.ProbeRecord` (from ``open_prober(records=...)``) is fed in
        as the ``etcd_probing`` probe type would report it.

        With ``targets``, the list is checked every ``sweep_interval`` seconds, so a target
        removed from it resolves as it would in the runner.
        """
        async with results, open_nursery() as nursery:
            if targets is not None:
                nursery.start_soon(self._sweep, probe, targets, sweep_interval)
            task_status.started()
            async for result in results:
                if isinstance(result, ProbeRecord):
                    result = probe_result(result)
                self.feed(probe, result)
            nursery.cancel_scope.cancel()

    async def _sweep(
        self, probe: str, targets: Callable[[], Iterable[str]], interval: float
    ) -> None:
        async for _ in Ticker(interval):
            self.set_targets(probe, targets())

    # -- output ---------------------------------------------------------------------------------
    def subscribe(self, buffer: int = 256) -> trio.MemoryReceiveChannel[Transition]:
        """A channel of every transition from now on; close it (``with``) to unsubscribe.

        It ends (``EndOfChannel``) when :meth:`close` is called, e.g. when the runner stops.
        """
        send, receive = trio.open_memory_channel[Transition](buffer)
        self._subscribers.append(send)
        return receive

    def add_listener(self, listener: Callable[[Transition], None]) -> None:
        """Call ``listener`` synchronously with each transition; it must not block."""
        self._listeners.append(listener)

    async def wait_until(
        self, target: str, state: State, *, probe: str | None = None
    ) -> TargetStatus:
        """Return once ``target`` (of ``probe``, or of any probe) is in ``state``."""
        if state not in _STATES:
            raise ValueError(f"unknown state {state!r}; expected one of {', '.join(_STATES)}")
        while True:
            for status in self.statuses():
                same = status.target == target and (probe is None or status.probe == probe)
                if same and status.state == state:
                    return status
            if state == UNKNOWN and not any(
                s.target == target and (probe is None or s.probe == probe) for s in self.statuses()
            ):
                # A target never seen (or forgotten after removal) is unknown.
                return TargetStatus(probe or "", target, UNKNOWN, time.time(), "", 0, 0, None, 0)
            waiter = (target, state, probe, trio.Event())
            self._waiters.append(waiter)
            try:
                await waiter[3].wait()
            finally:
                self._waiters.remove(waiter)

    def close(self) -> None:
        """End every subscription (their ``async for`` loops finish)."""
        for send in self._subscribers:
            send.close()
        self._subscribers.clear()

    def _emit(self, transition: Transition) -> None:
        for send in list(self._subscribers):
            try:
                send.send_nowait(transition)
            except trio.WouldBlock:
                self.dropped += 1
                logger.warning(
                    "a transition subscriber is %d behind: dropped %s %s -> %s",
                    send.statistics().current_buffer_used,
                    transition.target,
                    transition.old,
                    transition.new,
                )
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(send)
        for target, state, probe, event in self._waiters:
            same = target == transition.target and (probe is None or probe == transition.probe)
            if same and state == transition.new:
                event.set()
        for listener in self._listeners:
            listener(transition)

    # -- reading ---------------------------------------------------------------------------------
    def statuses(self) -> list[TargetStatus]:
        """Every known probe x target, grouped by probe, in the order first seen."""
        return [self._status(e.health) for es in self._entries.values() for e in es.values()]

    def status(self, target: str, *, probe: str | None = None) -> TargetStatus | None:
        for status in self.statuses():
            if status.target == target and (probe is None or status.probe == probe):
                return status
        return None

    def history(self, probe: str, target: str) -> History | None:
        entry = self._entries.get(probe, {}).get(target)
        return None if entry is None else entry.history

    def snapshot(self) -> list[tuple[TargetHealth, History]]:
        """Every probe x target's live state and history, by probe (a list copy:
        safe to walk across checkpoints while results keep coming in)."""
        return [(e.health, e.history) for es in self._entries.values() for e in es.values()]

    def entry(self, probe: str, target: str) -> TargetHealth | None:
        found = self._entries.get(probe, {}).get(target)
        return None if found is None else found.health

    def entries(self, probe: str) -> list[TargetHealth]:
        return [e.health for e in self._entries.get(probe, {}).values()]

    @staticmethod
    def _status(h: TargetHealth) -> TargetStatus:
        return TargetStatus(
            probe=h.probe,
            target=h.target,
            state=h.state,
            since=h.since,
            alert=h.rule.name,
            failures=h.failures,
            total=h.total,
            error=h.last_error,
            transitions=h.transitions,
            failure=h.last_reason,
        )
