"""Taking targets over: what an ownership change adds is probed within a fifth of its interval
(not at its spread offset, up to a whole interval later); at start everything is spread as
usual. Under the MockClock: the times are the scheduler's, not the machine's."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trioprobe._ticks import spread_offset
from trioprobe.fleet import ownership as ownership_module
from trioprobe.fleet.ownership import Ownership
from trioprobe.fleet.rendezvous import Member, key_of
from trioprobe.probes._base import run_per_target
from trioprobe.results import ProbeResult
from trioprobe.targets import ProbeTargets, Target
from trioprobe.targets.static import StaticSource

INTERVAL = 10.0
ADDRESSES = [f"http://10.0.0.{i}/" for i in range(40)]


class Shard:
    """A filter whose verdict the test changes, as a fleet's ownership does."""

    def __init__(self, owned: set[str]) -> None:
        self.owned = owned

    def __call__(self, probe: str, targets: tuple[Target, ...]) -> list[Target]:
        return [t for t in targets if t.address in self.owned]


async def _first_probes(targets: ProbeTargets, change: float, after: set[str]) -> dict[str, float]:
    """When each address was first probed, with the filter changed to ``after`` at ``change``."""
    first: dict[str, float] = {}

    async def probe_once(target: str) -> ProbeResult:
        first.setdefault(target, trio.current_time())
        return ProbeResult(target, True, 0.001)

    send, receive = trio.open_memory_channel[ProbeResult](10_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drain, receive)
        await nursery.start(targets.run)
        start = trio.current_time()
        await nursery.start(
            lambda task_status: run_per_target(
                targets,
                interval=INTERVAL,
                probe_timeout=1.0,
                probe_once=probe_once,
                results=send,
                task_status=task_status,
            )
        )
        await trio.sleep_until(start + change)
        filter_ = Shard(after)
        targets.set_filter(filter_)
        await trio.sleep(2 * INTERVAL)
        nursery.cancel_scope.cancel()
    return {a: t - start for a, t in first.items()}


async def _drain(receive: trio.MemoryReceiveChannel[ProbeResult]) -> None:
    async for _ in receive:
        pass


async def test_targets_taken_over_are_probed_within_a_fifth_of_the_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mine, theirs = set(ADDRESSES[:20]), set(ADDRESSES[20:])
    targets = ProbeTargets("web", [StaticSource(ADDRESSES)], filter=Shard(mine))
    targets.preload()
    change = 25.0
    first = await _first_probes(targets, change, mine | theirs)
    assert set(first) == mine | theirs
    late = [a for a in theirs if spread_offset(a, INTERVAL) > 0.2 * INTERVAL]
    assert late  # without the hurry these would wait more than a fifth of the interval
    for address in theirs:
        assert change < first[address] <= change + 0.2 * INTERVAL
    # What this agent held from the start was spread over the whole interval, as always.
    for address in mine:
        assert first[address] == pytest.approx(spread_offset(address, INTERVAL))


async def test_the_first_assignment_is_spread_over_the_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # An agent's start: nothing owned until it first sees the members, then its share.
    targets = ProbeTargets("web", [StaticSource(ADDRESSES)], filter=Shard(set()))
    targets.preload()
    first = await _first_probes(targets, 1.0, set(ADDRESSES))
    assert targets.taken_over == {}
    for address in ADDRESSES:
        assert first[address] == pytest.approx(1.0 + spread_offset(address, INTERVAL))


class _View:
    """The part of a Membership that Ownership reads, changed by the test."""

    def __init__(self, me: str, names: list[str]) -> None:
        self.info = Member(me)
        self.generation = 1
        self.members = [Member(n) for n in names]
        self._changed = trio.Event()

    def live(self) -> list[Member]:
        return list(self.members)

    def drop(self, name: str) -> None:
        self.members = [m for m in self.members if m.name != name]
        self.generation += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self, generation: int) -> int:
        while self.generation == generation:
            await self._changed.wait()
        return self.generation


async def test_a_leave_scores_again_only_the_leavers_keys_and_agrees_with_a_full_count(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"a{i}" for i in range(10)]
    view = _View("a0", names)
    ownership = Ownership(view, 2)  # type: ignore[arg-type]
    keys = [f"http://10.1.{i // 250}.{i % 250}/" for i in range(5000)]
    ownership.filter("web", keys)
    scored = 0
    real_owners = ownership_module.owners

    def counting(*args: Any) -> tuple[str, ...]:
        nonlocal scored
        scored += 1
        return real_owners(*args)

    monkeypatch.setattr(ownership_module, "owners", counting)
    held = {k for k in keys if "a3" in ownership.owners("web", k)}
    scored = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ownership.run)
        await trio.sleep(1)
        view.drop("a3")
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert scored == len(held)  # about replicas/N of the keys, not all of them
    members = view.live()
    expected = [k for k in keys if "a0" in real_owners(key_of("web", k), members, 2)]
    assert ownership.filter("web", keys) == expected
