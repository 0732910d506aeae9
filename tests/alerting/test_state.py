"""The health state machine, thresholds and window condition (pure, then under the Trio clock)."""

from __future__ import annotations

import pytest
import trio

from trioprobe.alerting import DOWN, UNKNOWN, UP, AlertRule, Health, TargetHealth, Transition
from trioprobe.results import ProbeResult


def _feed(h: TargetHealth, pattern: str, latency: float = 0.01) -> list[str]:
    """Feed ``pattern`` ("+" success, "-" failure); the state after each result."""
    states: list[str] = []
    for ch in pattern:
        h.feed(ProbeResult("t", ch == "+", latency, error=None if ch == "+" else "boom"))
        states.append(h.state)
    return states


def test_defaults_down_after_three_failures_up_after_two_successes() -> None:
    h = TargetHealth("p", "t", AlertRule(), 0.0)
    assert h.state == UNKNOWN
    assert _feed(h, "+") == [UNKNOWN]
    assert _feed(h, "+") == [UP]
    assert _feed(h, "--") == [UP, UP]
    assert _feed(h, "-") == [DOWN]
    assert h.last_error == "boom"
    assert _feed(h, "+") == [DOWN]
    assert _feed(h, "+") == [UP]
    assert h.transitions == 3


def test_unknown_target_that_only_fails_goes_down() -> None:
    h = TargetHealth("p", "t", AlertRule(), 0.0)
    assert _feed(h, "---") == [UNKNOWN, UNKNOWN, DOWN]


def test_flapping_input_does_not_flap_the_state() -> None:
    h = TargetHealth("p", "t", AlertRule(), 0.0)
    _feed(h, "++")
    # Alternating results never reach 3 failures or (once down) 2 successes in a row.
    assert set(_feed(h, "-+" * 20)) == {UP}
    _feed(h, "---")
    assert set(_feed(h, "+-" * 20)) == {DOWN}
    assert h.transitions == 2


def test_window_condition_failures_of_total() -> None:
    # cloudprober-style: down when 3 of the last 10 failed, even with no 3 in a row.
    h = TargetHealth("p", "t", AlertRule(failure_threshold=0, failures=3, total=10), 0.0)
    _feed(h, "++")
    assert _feed(h, "-+-+-") == [UP, UP, UP, UP, DOWN]
    assert (h.failures, h.total) == (3, 7)
    # Successes are not enough while 3 of the last 10 still failed...
    assert set(_feed(h, "+++++")) == {DOWN}
    # ...until the first failure leaves the window.
    assert _feed(h, "+") == [UP]
    assert (h.failures, h.total) == (2, 10)


def test_latency_condition_counts_slow_successes_as_failures() -> None:
    h = TargetHealth("p", "t", AlertRule(max_latency=0.1), 0.0)
    _feed(h, "++", latency=0.05)
    assert _feed(h, "+++", latency=0.5) == [UP, UP, DOWN]
    assert h.last_error is not None
    assert "max_latency" in h.last_error
    assert _feed(h, "++", latency=0.05) == [DOWN, UP]


def test_rule_checks_its_values() -> None:
    with pytest.raises(ValueError, match="no down condition"):
        AlertRule(failure_threshold=0)
    with pytest.raises(ValueError, match="failures"):
        AlertRule(failures=4, total=3)


def _result(target: str, ok: bool) -> ProbeResult:
    return ProbeResult(target, ok, 0.01, error=None if ok else "refused")


async def test_subscribe_and_wait_until(autojump_clock: trio.abc.Clock) -> None:
    health = Health()
    seen: list[Transition] = []

    async def follow(transitions: trio.MemoryReceiveChannel[Transition]) -> None:
        with transitions:
            async for t in transitions:
                seen.append(t)

    async def feeder() -> None:
        for ok in [True, True, False, False, False, True, True]:
            await trio.sleep(1)
            health.feed("p", _result("a", ok))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow, health.subscribe())
        nursery.start_soon(feeder)
        start = trio.current_time()
        down = await health.wait_until("a", DOWN)
        assert trio.current_time() - start == pytest.approx(5)
        assert down.error == "refused"
        up = await health.wait_until("a", UP, probe="p")
        assert up.state == UP
        health.close()  # ends the subscription
    assert [(t.old, t.new) for t in seen] == [(UNKNOWN, UP), (UP, DOWN), (DOWN, UP)]
    assert seen[1].failures == 3
    assert seen[1].fires
    assert seen[2].resolves


async def test_removed_while_down_resolves(autojump_clock: trio.abc.Clock) -> None:
    health = Health()
    with health.subscribe() as transitions:
        for _ in range(3):
            health.feed("p", _result("gone", False))
        health.feed("p", _result("stays", True))
        assert health.status("gone") is not None
        health.set_targets("p", ["stays"])
        got = [transitions.receive_nowait(), transitions.receive_nowait()]
    assert [(t.target, t.old, t.new, t.reason) for t in got] == [
        ("gone", UNKNOWN, DOWN, "result"),
        ("gone", DOWN, UNKNOWN, "removed"),
    ]
    assert got[1].resolves
    assert health.status("gone") is None  # state and history forgotten
    assert (await health.wait_until("gone", UNKNOWN)).state == UNKNOWN


async def test_slow_subscriber_loses_newest_not_the_feeder(autojump_clock: trio.abc.Clock) -> None:
    health = Health()
    with health.subscribe(buffer=1) as transitions:
        for ok in [True, True, False, False, False]:
            health.feed("p", _result("a", ok))
        assert transitions.receive_nowait().new == UP
        with pytest.raises(trio.WouldBlock):
            transitions.receive_nowait()
    assert health.dropped == 1


async def test_track_owns_a_results_channel_and_sweeps_targets(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The standalone path (e.g. a Prober's results channel): track() is the owner task."""
    health = Health()
    targets = ["a"]
    send, receive = trio.open_memory_channel[ProbeResult](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: health.track(
                "peers", receive, targets=lambda: targets, task_status=task_status
            )
        )
        for _ in range(3):
            await send.send(_result("a", False))
        assert (await health.wait_until("a", DOWN)).probe == "peers"
        targets.clear()
        await health.wait_until("a", UNKNOWN)
        await send.aclose()  # the channel's end ends track()
