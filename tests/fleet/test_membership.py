"""Membership on a fake etcd gateway, timed by the MockClock."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from trioprobe.fleet._etcd import EtcdClient, EtcdError
from trioprobe.fleet.membership import AgentInfo, FleetError, FleetNameInUse, Membership

from .fake_etcd import FakeEtcd

TTL = 3.0


def _membership(fake: FakeEtcd, name: str, **info: object) -> Membership:
    client = EtcdClient(["http://etcd.test"], client=httpx.AsyncClient(transport=fake))
    return Membership(client, "f1", AgentInfo(name, **info), lease_ttl=TTL)  # type: ignore[arg-type]


@asynccontextmanager
async def _agent(
    nursery: trio.Nursery, fake: FakeEtcd, name: str
) -> AsyncIterator[tuple[Membership, trio.CancelScope]]:
    m = _membership(fake, name)
    scope = trio.CancelScope()

    async def run(*, task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await m.run(task_status=task_status)

    await nursery.start(run)
    yield m, scope


async def _until(pred: Callable[[], bool], limit: float = 30.0) -> float:
    """Wait (in mock time) until ``pred()``; how long it took."""
    start = trio.current_time()
    with trio.fail_after(limit):
        while not pred():  # noqa: ASYNC110 - polling state another task changes
            await trio.sleep(0.05)
    return trio.current_time() - start


def _names(m: Membership) -> set[str]:
    return {member.name for member in m.live()}


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeEtcd:
    etcd = FakeEtcd()
    nursery.start_soon(etcd.run)
    return etcd


async def test_agents_see_each_other_join_and_leave(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, fake: FakeEtcd
) -> None:
    async with _agent(nursery, fake, "a") as (a, _), _agent(nursery, fake, "b") as (b, b_scope):
        await _until(lambda: _names(a) == {"a", "b"} == _names(b))
        gen = a.generation
        await b.leave()
        # Revoked: gone from a's view at once, not after the lease's TTL.
        assert await _until(lambda: _names(a) == {"a"}) < 0.5
        assert a.generation > gen
        b_scope.cancel()


async def test_a_live_name_is_refused(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, fake: FakeEtcd
) -> None:
    async with _agent(nursery, fake, "a"):
        with pytest.raises(FleetNameInUse, match="'a' is already live in fleet 'f1'"):
            await _membership(fake, "a").start()
    # The refused agent's lease was revoked, not left to expire.
    assert len(fake.leases) == 1


async def test_unreachable_etcd_at_start_is_a_bounded_error(
    autojump_clock: trio.testing.MockClock, fake: FakeEtcd
) -> None:
    fake.stop()
    start = trio.current_time()
    with pytest.raises(FleetError, match="cannot register with etcd"):
        await _membership(fake, "a").start()
    assert trio.current_time() - start <= TTL + 3


async def test_a_killed_agent_expires_within_its_lease(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, fake: FakeEtcd
) -> None:
    async with _agent(nursery, fake, "a") as (a, _), _agent(nursery, fake, "b") as (_, b_scope):
        await _until(lambda: _names(a) == {"a", "b"})
        b_scope.cancel()  # dies without revoking: like kill -9
        took = await _until(lambda: _names(a) == {"a"})
        assert took <= TTL + 0.5


async def test_fail_static_then_rejoin(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    fake: FakeEtcd,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with _agent(nursery, fake, "a") as (a, _), _agent(nursery, fake, "b") as (b, _):
        await _until(lambda: _names(a) == {"a", "b"} and a.connected)
        gen = a.generation
        fake.stop()
        await _until(lambda: not a.connected and not b.connected)
        await trio.sleep(30)  # far past the lease: the view stays as last seen
        assert _names(a) == {"a", "b"}
        assert a.generation == gen
        assert caplog.text.count("etcd unreachable") == 2  # once per agent, not per retry
        fake.start()
        await _until(lambda: a.connected and b.connected)
        await trio.sleep(2 * TTL)
        assert _names(a) == {"a", "b"} == _names(b)
        assert len(fake.leases) == 2


async def test_expired_lease_is_detected_and_registered_again(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, fake: FakeEtcd
) -> None:
    async with _agent(nursery, fake, "a") as (a, _), _agent(nursery, fake, "b") as (b, _):
        await _until(lambda: _names(a) == {"a", "b"})
        a.set_vote("web", "http://t/", down=True)
        await _until(lambda: "a" in b.votes.get(("web", "http://t/"), {}))
        old = a.lease
        fake.expire_lease(old)  # as if a had been paused past its lease
        await _until(lambda: a.reregistrations == 1 and a.lease != old)
        await _until(lambda: _names(b) == {"a", "b"} == _names(a))
        # Its vote went with the old lease and is published again under the new one.
        await _until(lambda: "a" in b.votes.get(("web", "http://t/"), {}))
        assert fake.lease_of(b"trioprobe/fleet/f1/members/a") == a.lease


async def test_votes_vanish_with_a_dead_agent(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, fake: FakeEtcd
) -> None:
    async with _agent(nursery, fake, "a") as (a, _), _agent(nursery, fake, "b") as (b, b_scope):
        b.set_vote("web", "http://t/", down=True)
        await _until(lambda: "b" in a.votes.get(("web", "http://t/"), {}))
        b.set_vote("web", "http://t/", down=False)
        await _until(lambda: ("web", "http://t/") not in a.votes)
        b.set_vote("web", "http://t/", down=True)
        await _until(lambda: ("web", "http://t/") in a.votes)
        b_scope.cancel()
        await _until(lambda: ("web", "http://t/") not in a.votes, limit=TTL + 1)


async def test_steady_state_writes_are_bounded(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, fake: FakeEtcd
) -> None:
    async with _agent(nursery, fake, "a") as (a, _):
        await trio.sleep(1)
        before = a.etcd.writes
        await trio.sleep(60)
        writes = a.etcd.writes - before
        # One keep-alive every lease_ttl / 3: 1 write/s at this small TTL, 0.3/s at 10 s.
        assert 60 / (TTL / 3) - 1 <= writes <= 60 / (TTL / 3) + 1


async def test_a_range_without_our_key_while_the_lease_lives_changes_nothing(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, fake: FakeEtcd
) -> None:
    async with _agent(nursery, fake, "a") as (a, _), _agent(nursery, fake, "b"):
        await _until(lambda: _names(a) == {"a", "b"})
        real = a.etcd.range_prefix
        bogus = 0

        async def empty_once(prefix: bytes) -> tuple[int, list[Any]]:
            nonlocal bogus
            revision, kvs = await real(prefix)
            if bogus == 0:
                bogus += 1
                return revision, []  # as an etcd going down once answered
            return revision, kvs

        a.etcd.range_prefix = empty_once  # type: ignore[method-assign]
        gen = a.generation
        fake.stop()  # the watch breaks: a reads the whole prefix again once etcd is back
        await trio.sleep(1)
        fake.start()
        await _until(lambda: bogus == 1 and a.connected)
        await trio.sleep(2 * TTL)
        # The keep-alive found the lease alive: a kept itself and b, and did not register again.
        assert _names(a) == {"a", "b"}
        assert a.reregistrations == 0
        assert a.generation == gen


async def test_a_lost_lease_keeps_the_assignment_until_registered_again(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, fake: FakeEtcd
) -> None:
    """An etcd that stalls or shuts down can expire every lease, and then not answer: an agent
    that dropped itself from its own view then would stop probing everything it owns (a soak
    run saw targets unprobed during an etcd outage). It keeps itself until it registers again."""
    async with _agent(nursery, fake, "a") as (a, _), _agent(nursery, fake, "b") as (b, _):
        await _until(lambda: _names(a) == {"a", "b"} == _names(b))
        real = a.etcd.grant
        refused = 0

        async def unreachable(ttl: int) -> int:
            nonlocal refused
            refused += 1
            raise EtcdError("no answer within 2.0s")

        a.etcd.grant = unreachable  # type: ignore[method-assign]
        fake.expire_lease(a.lease)  # the watch tells a (and b) that a's key is gone
        await _until(lambda: "a" not in b.members and "a" not in a.members and refused > 0)
        tried = refused
        await trio.sleep(2 * TTL)
        # Still in its own view (so it still owns what it did), retrying once per keep-alive
        # period (not in a busy loop), not registered.
        assert _names(a) == {"a", "b"}
        assert _names(b) == {"b"}
        assert 2 <= refused - tried <= 2 * TTL / (TTL / 3) + 1
        assert a.reregistrations == 0
        a.etcd.grant = real  # type: ignore[method-assign]
        await _until(lambda: a.reregistrations == 1)
        await _until(lambda: _names(b) == {"a", "b"} == _names(a))


async def test_renewals_keep_their_cadence_when_calls_are_slow_or_fail(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, fake: FakeEtcd
) -> None:
    """Soak runs at load 15 saw renewals take 1-3 s (etcd busy, or the agent's own loop lagging)
    and short leases expire: the next renewal is due a period after the last one *started*, and
    a failed one is tried again soon while the lease may still be alive."""
    async with _agent(nursery, fake, "a") as (a, _):
        real = a.etcd.keepalive
        starts: list[float] = []
        fail_next = False

        async def slow(lease: int) -> int:
            nonlocal fail_next
            starts.append(trio.current_time())
            await trio.sleep(0.8)  # most of a period (TTL / 3 = 1 s)
            if fail_next:
                fail_next = False
                raise EtcdError("no answer within 2.0s")
            return await real(lease)

        a.etcd.keepalive = slow  # type: ignore[method-assign]
        await trio.sleep(10)
        gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
        assert gaps
        assert max(gaps) <= TTL / 3 + 0.01  # not 0.8 + 1 s: the call's time is in the period
        fail_next = True
        count = len(starts)
        await _until(lambda: len(starts) > count + 1)
        assert starts[count + 1] - starts[count] <= 0.8 + TTL / 12 + 0.01
        assert a.reregistrations == 0
        assert "a" in fake_members(fake)


def fake_members(fake: FakeEtcd) -> set[str]:
    prefix = b"trioprobe/fleet/f1/members/"
    return {k[len(prefix) :].decode() for k in fake.kv if k.startswith(prefix)}


async def test_leaves_seen_while_etcd_fails_us_wait_for_a_fresh_read(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, fake: FakeEtcd
) -> None:
    """An etcd shutting down (or stalled) stops answering our calls and expires every lease: a
    soak run saw agents apply those deletions and take over every target as etcd stopped. While
    etcd fails this agent's calls it keeps its view; once etcd answers, it reads it afresh."""
    async with (
        _agent(nursery, fake, "a") as (a, _),
        _agent(nursery, fake, "b") as (b, _),
        _agent(nursery, fake, "c") as (_, c_scope),
    ):
        await _until(lambda: _names(a) == {"a", "b", "c"} == _names(b))
        real = a.etcd.keepalive

        async def failing(lease: int) -> int:
            raise EtcdError("POST /v3/lease/keepalive answered 503")

        a.etcd.keepalive = failing  # type: ignore[method-assign]
        await _until(lambda: not a.connected)
        c_scope.cancel()  # c dies; its lease expires and the watch tells a and b
        await _until(lambda: _names(b) == {"a", "b"}, limit=TTL + 2)
        await trio.sleep(0.5)
        assert _names(a) == {"a", "b", "c"}  # frozen while etcd fails a's calls
        a.etcd.keepalive = real  # type: ignore[method-assign]
        await _until(lambda: a.connected)
        await _until(lambda: _names(a) == {"a", "b"}, limit=2)
        assert a.reregistrations <= 1
