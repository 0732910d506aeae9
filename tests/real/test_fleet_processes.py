"""A real fleet: several ``trioprobe run`` processes, one real etcd, one logging target server.

Verdicts are on counts read from the target server's log (which agent probed which target):
exactly ``replicas`` agents per target in steady state, and every target back to that after a
kill -9, a SIGTERM, an etcd outage and a SIGSTOP past the lease. The waits are hang guards, not
verdicts; the takeover times are measured and printed (docs/fleet.md quotes them).
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from .fleet_peers import Agent, TargetServer
from .services import Etcd

pytestmark = [pytest.mark.real, pytest.mark.slow]

TARGETS = 200
REPLICAS = 2
TTL = 4
INTERVAL = 2.0
GUARD = 60.0  # hang guard of each wait; generous: the machine is shared


def _wait(what: str, pred: Callable[[], bool], limit: float = GUARD) -> float:
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > limit:
            pytest.fail(f"not within {limit}s: {what}; {_SHOW[0]() if _SHOW else ''}")
        time.sleep(0.1)
    return time.monotonic() - start


_SHOW: list[Callable[[], str]] = []


def _describe(server: TargetServer, window: float) -> str:
    now = time.monotonic()
    seen = server.probers(now - window, now)
    shapes = Counter(tuple(sorted(s)) for s in seen.values())
    return f"{len(seen)} targets probed in the last {window}s, by: {dict(shapes.most_common(12))}"


def _exactly(server: TargetServer, agents: set[str], n: int, window: float) -> bool:
    """Every target probed, in the last ``window`` seconds, by exactly ``n`` of ``agents``."""
    now = time.monotonic()
    seen = server.probers(now - window, now)
    return len(seen) == TARGETS and all(len(s & agents) == n and s <= agents for s in seen.values())


def _notes(output: str) -> str:
    """An agent's output without its per-target lines: its warnings and errors."""
    lines = [
        ln for ln in output.splitlines() if not ln.startswith(("up:", "DOWN:", "ok:", "FAILING:"))
    ]
    return "\n".join(lines[-15:])


def _covered(server: TargetServer, since: float, until: float) -> int:
    return len(server.probers(since, until))


def _takeover(server: TargetServer, gone: str, after: float, before: float) -> float:
    """The longest time after ``after`` until a target ``gone`` probed was probed by an agent
    that had not probed it before (its new owner)."""
    earlier = server.probers(before, after)
    firsts: dict[str, float] = {}
    for t, agent, path in server.since(after):
        if gone in earlier.get(path, set()) and agent not in earlier[path]:
            firsts.setdefault(path, t)
    moved = [path for path, agents in earlier.items() if gone in agents]
    assert len(firsts) == len(moved), "some of the gone agent's targets were never taken over"
    return max(firsts.values()) - after


def test_fleet_shards_fails_over_and_survives_etcd(etcd: Etcd, tmp_path: Path) -> None:
    with TargetServer() as server:
        (tmp_path / "targets.txt").write_text("".join(server.url(i) + "\n" for i in range(TARGETS)))
        fields = {
            "etcd": etcd.client_url,
            "fleet": "t",
            "replicas": REPLICAS,
            "ttl": TTL,
            "interval": INTERVAL,
            "timeout": 1.5,
            "extra": "",
        }
        agents = {n: Agent(tmp_path, n, **fields) for n in ("a1", "a2", "a3", "a4", "a5")}
        try:
            for agent in agents.values():
                agent.start()
            _run_phases(server, etcd, agents)
        finally:
            for agent in agents.values():
                agent.stop()
        for agent in agents.values():
            assert "Traceback" not in agent.output(), agent.output()[-3000:]


def _run_phases(server: TargetServer, etcd: Etcd, agents: dict[str, Agent]) -> None:
    live = set(agents)
    window = 2 * INTERVAL + 0.5
    _SHOW[:] = [
        lambda: (
            _describe(server, window)
            + "".join(f"\n--- {a.name}:\n{_notes(a.output())}" for a in agents.values())
        )
    ]
    _wait("exactly 2 agents per target", lambda: _exactly(server, live, REPLICAS, window))
    time.sleep(window)
    assert _exactly(server, live, REPLICAS, window)  # and it stays so

    # kill -9: the lease expires; the others take over.
    before = time.monotonic()
    agents["a1"].signal(signal.SIGKILL)
    agents["a1"].wait()
    live.discard("a1")
    _wait("coverage after kill -9", lambda: _exactly(server, live, REPLICAS, window))
    kill_takeover = _takeover(server, "a1", before, before - window)
    print(f"takeover after kill -9: {kill_takeover:.2f}s (lease_ttl {TTL}s, interval {INTERVAL}s)")
    assert kill_takeover < TTL + INTERVAL + GUARD / 4

    # SIGTERM: the lease is revoked first, so the takeover does not wait for it.
    before = time.monotonic()
    agents["a2"].signal(signal.SIGTERM)
    assert agents["a2"].wait() == 0
    live.discard("a2")
    _wait("coverage after SIGTERM", lambda: _exactly(server, live, REPLICAS, window))
    term_takeover = _takeover(server, "a2", before, before - window)
    print(f"takeover after SIGTERM: {term_takeover:.2f}s (interval {INTERVAL}s)")

    # etcd down: every agent keeps probing its assignment (fail-static), then rejoins.
    etcd.stop()
    stopped = time.monotonic()
    time.sleep(4 * TTL)
    during = server.probers(stopped + window, time.monotonic())
    assert len(during) == TARGETS  # coverage stayed whole
    assert all(len(s) == REPLICAS for s in during.values())
    etcd.start()
    time.sleep(2 * TTL)
    _wait("coverage after the etcd outage", lambda: _exactly(server, live, REPLICAS, window))

    # SIGSTOP past the lease, then SIGCONT: no lasting double coverage.
    agents["a3"].signal(signal.SIGSTOP)
    others = live - {"a3"}
    _wait("takeover from the paused agent", lambda: _exactly(server, others, REPLICAS, window))
    agents["a3"].signal(signal.SIGCONT)
    resumed = time.monotonic()

    def back() -> bool:
        now = time.monotonic()
        recent = server.probers(now - window, now)
        rejoined = any("a3" in agents for agents in recent.values())
        return now > resumed + window and rejoined and _exactly(server, live, REPLICAS, window)

    _wait("the resumed agent back, with exactly 2 agents per target", back)
    print(f"exactly {REPLICAS} per target again {time.monotonic() - resumed:.2f}s after SIGCONT")
    time.sleep(window)
    assert _exactly(server, live, REPLICAS, window)


def test_a_second_agent_with_a_live_name_is_refused(etcd: Etcd, tmp_path: Path) -> None:
    with TargetServer() as server:
        (tmp_path / "targets.txt").write_text(server.url(0) + "\n")
        fields = {
            "etcd": etcd.client_url,
            "fleet": "t",
            "replicas": 1,
            "ttl": TTL,
            "interval": INTERVAL,
            "timeout": 1.5,
            "extra": "",
        }
        first = Agent(tmp_path, "same", **fields)
        first.start()
        try:
            _wait("the first agent probing", lambda: bool(server.probers(0.0)))
            (tmp_path / "second").mkdir()
            (tmp_path / "second" / "targets.txt").write_text(server.url(0) + "\n")
            second = Agent(tmp_path / "second", "same", **fields)
            second.start()
            assert second.wait(60) == 2
            errors = [ln for ln in second.output().splitlines() if ln.strip()]
            assert errors == [
                "trioprobe: error: fleet could not start: agent name 'same' is already live in "
                f"fleet 't'; give this agent another name, or wait for the other one's lease "
                f"({TTL}s) to expire"
            ]
        finally:
            first.stop()


ALERT = """
[[alert]]
name = "down"
failure_threshold = 2
success_threshold = 1
quorum = {quorum}
webhook = "{hook}"
webhook_queue_dir = "queue-{{agent}}"
"""


def _fleet_with_alert(
    etcd: Etcd, server: TargetServer, workdir: Path, fleet: str, quorum: int
) -> dict[str, Agent]:
    workdir.mkdir()
    (workdir / "targets.txt").write_text("".join(server.url(i) + "\n" for i in range(20)))
    extra = ALERT.format(quorum=quorum, hook=f"http://127.0.0.1:{server.port}/hook")
    fields = {
        "etcd": etcd.client_url,
        "fleet": fleet,
        "replicas": 2,
        "ttl": TTL,
        "interval": 0.5,
        "timeout": 1.5,
    }
    return {
        n: Agent(workdir, n, extra=extra.replace("{agent}", n), **fields)
        for n in (f"{fleet}-1", f"{fleet}-2", f"{fleet}-3")
    }


@pytest.mark.parametrize("quorum", [1, 2])
def test_one_flaky_vantage_point_pages_only_without_quorum(
    etcd: Etcd, tmp_path: Path, quorum: int
) -> None:
    with TargetServer() as server:
        fleet = f"q{quorum}"
        agents = _fleet_with_alert(etcd, server, tmp_path / fleet, fleet, quorum)
        path = "/t/0"
        try:
            for agent in agents.values():
                agent.start()

            def settled() -> bool:
                # Every agent has joined (each probes something) and the target has its 2 owners:
                # picked before that, the victim could lose the target to a later joiner.
                now = time.monotonic()
                recent = server.probers(now - 2, now)
                joined = set().union(*recent.values()) == set(agents)
                return joined and len(recent.get(path, ())) == 2

            _wait("all agents joined, two probing the target", settled)
            victim = sorted(server.probers(time.monotonic() - 2, time.monotonic())[path])[-1]
            server.fail_for.add((victim, path))
            failed_from = len(server.log)
            # Count-based: the victim has seen the target fail well past failure_threshold.
            _wait(
                "the flaky vantage point failing the target 6 times",
                lambda: (
                    sum(1 for _, a, p in server.log[failed_from:] if a == victim and p == path) >= 6
                ),
            )
            if quorum == 2:
                time.sleep(1)
                assert server.hooks == []
                return
            _wait("a fire notice", lambda: any(h["event"] == "fire" for _, h in server.hooks))
            server.fail_for.clear()
            _wait("a resolve notice", lambda: any(h["event"] == "resolve" for _, h in server.hooks))
            time.sleep(2)  # any duplicate delivery would come by now
            keys = {(h["event"], key) for key, h in server.hooks}
            assert {event for event, _ in keys} == {"fire", "resolve"}
            assert len(keys) == 2  # one Idempotency-Key per transition, whoever sent it
            assert all(h["target"] == server.url(0) for _, h in server.hooks)
        finally:
            for agent in agents.values():
                agent.stop()
