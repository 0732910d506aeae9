"""Fleet membership against a real etcd (Debian's etcd-server) on loopback."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import pytest
import trio

from trioprobe.fleet._etcd import EtcdClient
from trioprobe.fleet.membership import AgentInfo, FleetNameInUse, Membership

from .services import Etcd

pytestmark = pytest.mark.real

TTL = 2.0


def _membership(etcd: Etcd, name: str, fleet: str = "real") -> Membership:
    return Membership(EtcdClient([etcd.client_url]), fleet, AgentInfo(name), lease_ttl=TTL)


async def _until(pred: Callable[[], bool], limit: float = 20.0) -> float:
    start = time.monotonic()
    with trio.fail_after(limit):  # a hang guard only: verdicts are on the states reached
        while not pred():  # noqa: ASYNC110 - polling state another task changes
            await trio.sleep(0.02)
    return time.monotonic() - start


def _names(m: Membership) -> set[str]:
    return {member.name for member in m.live()}


async def _run(nursery: trio.Nursery, m: Membership) -> trio.CancelScope:
    scope = trio.CancelScope()

    async def run(*, task_status: trio.TaskStatus[None]) -> None:
        async with m.etcd:
            with scope:
                await m.run(task_status=task_status)

    await nursery.start(run)
    return scope


async def test_join_refuse_leave_and_expire(etcd: Etcd, nursery: trio.Nursery) -> None:
    a, b, c = (_membership(etcd, n) for n in "abc")
    await _run(nursery, a)
    await _run(nursery, b)
    c_scope = await _run(nursery, c)
    await _until(lambda: _names(a) == {"a", "b", "c"})
    second = _membership(etcd, "b")
    async with second.etcd:
        with pytest.raises(FleetNameInUse, match="'b' is already live"):
            await second.start()
    # SIGTERM's path: revoked, so gone at once (well under the TTL).
    await b.leave()
    assert await _until(lambda: _names(a) == {"a", "c"}) < TTL
    # kill -9's path: no revoke; etcd expires the lease.
    c_scope.cancel()
    assert await _until(lambda: _names(a) == {"a"}) < TTL + 2.0


async def test_fail_static_through_an_etcd_restart(etcd: Etcd, nursery: trio.Nursery) -> None:
    a, b = _membership(etcd, "a"), _membership(etcd, "b")
    await _run(nursery, a)
    await _run(nursery, b)
    await _until(lambda: _names(a) == {"a", "b"} == _names(b) and a.connected)
    gen = a.generation
    await trio.to_thread.run_sync(etcd.stop)
    await _until(lambda: not a.connected and not b.connected)
    await trio.sleep(TTL * 2)
    assert _names(a) == {"a", "b"}
    assert a.generation == gen
    await trio.to_thread.run_sync(etcd.start)
    await _until(lambda: a.connected and b.connected, limit=30)
    await trio.sleep(TTL * 2)
    assert _names(a) == {"a", "b"} == _names(b)


async def test_expired_lease_registers_again(etcd: Etcd, nursery: trio.Nursery) -> None:
    a, b = _membership(etcd, "a"), _membership(etcd, "b")
    await _run(nursery, a)
    await _run(nursery, b)
    await _until(lambda: _names(a) == {"a", "b"} == _names(b))
    b.set_vote("web", "http://t/", down=True)
    await _until(lambda: "b" in a.votes.get(("web", "http://t/"), {}))
    old = b.lease
    async with EtcdClient([etcd.client_url]) as other:
        await other.revoke(old)  # what etcd does to a paused agent's lease
    await _until(lambda: b.reregistrations == 1 and b.lease != old)
    await _until(lambda: _names(a) == {"a", "b"} == _names(b))
    await _until(lambda: "b" in a.votes.get(("web", "http://t/"), {}))


async def test_fleet_status_command(etcd: Etcd, nursery: trio.Nursery) -> None:
    a, b = _membership(etcd, "a", fleet="st"), _membership(etcd, "b", fleet="st")
    await _run(nursery, a)
    await _run(nursery, b)
    b.set_vote("web", "http://t/", down=True)
    await _until(lambda: "b" in a.votes.get(("web", "http://t/"), {}))
    argv = [sys.executable, "-m", "trioprobe.cli", "fleet", "status", "--etcd", etcd.client_url]
    done = await trio.run_process([*argv, "--name", "st", "--json"], capture_stdout=True)
    view = json.loads(done.stdout)
    assert [m["name"] for m in view["members"]] == ["a", "b"]
    assert all(0 <= m["lease_left"] <= TTL for m in view["members"])
    assert view["down"] == [{"probe": "web", "target": "http://t/", "agents": ["b"]}]
    text = await trio.run_process([*argv, "--name", "st"], capture_stdout=True)
    lines = text.stdout.decode().splitlines()
    assert lines[0].startswith("fleet 'st': 2 live member(s)")
    assert lines[-1] == "  web http://t/: down for b"
    bad = await trio.run_process(
        [*argv[:-1], "http://127.0.0.1:9", "--name", "st"], capture_stderr=True, check=False
    )
    assert bad.returncode == 2
    assert bad.stderr.decode().startswith("trioprobe: error: fleet 'st': POST http://127.0.0.1:9")


async def test_an_ack_is_mirrored_leaseless_and_deleted_only_while_unchanged(
    etcd: Etcd, nursery: trio.Nursery
) -> None:
    """The acknowledgement's etcd calls as the real gateway takes them: a put with no lease,
    seen by every agent's watch, and the notifier's delete-if-unchanged txn (MOD compare)."""
    from trioprobe.fleet.acks import Ack

    a, b = _membership(etcd, "a", "acks"), _membership(etcd, "b", "acks")
    await _run(nursery, a)
    await _run(nursery, b)
    await _until(lambda: _names(a) == {"a", "b"} == _names(b))
    await a.put_ack("web", "http://t/", Ack(41, "a", 1.8e9))
    await _until(lambda: ("web", "http://t/") in b.acks)
    seen = b.acks[("web", "http://t/")]
    assert (seen.epoch, seen.by, seen.at) == (41, "a", 1.8e9)
    assert seen.mod_revision == a.acks[("web", "http://t/")].mod_revision > 0
    _, kvs = await b.etcd.range_prefix(b.prefix + b"acks/")
    assert [(kv.key, kv.lease) for kv in kvs] == [(b.prefix + b"acks/web\x00http://t/", 0)]
    # A newer acknowledgement replaced it: the stale delete leaves the newer one.
    await a.put_ack("web", "http://t/", Ack(42, "a", 1.8e9 + 1))
    assert not await b.etcd.delete_if(kvs[0].key, seen.mod_revision)
    await _until(lambda: b.acks[("web", "http://t/")].epoch == 42)
    await b.drop_ack("web", "http://t/", b.acks[("web", "http://t/")])
    await _until(lambda: ("web", "http://t/") not in a.acks and ("web", "http://t/") not in b.acks)
    # The acknowledgement outlives the agent that took it (no lease): a leaves, b still has it.
    await a.put_ack("web", "http://u/", Ack(7, "a", 1.8e9))
    await a.leave()
    await _until(lambda: _names(b) == {"b"})
    await trio.sleep(TTL + 1)
    assert ("web", "http://u/") in b.acks
