"""The stats keeper under a mock clock: cloudprober's semantics and ours beyond them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from trioprobe.metrics import Distribution, EventMetrics, Float, Int, Kind, Map, String
from trioprobe.results import ProbeResult
from trioprobe.stats import _FOLDS_PER_STEP, StatsKeeper, stats_keeper
from trioprobe.testing import assert_no_leaks

from ..loop_steps import counting_steps
from ._util import drain


class Keeper:
    """A keeper running in a nursery, with its channels at hand."""

    def __init__(
        self, nursery: trio.Nursery, targets: Callable[[], Sequence[str]], **kw: Any
    ) -> None:
        self.results, results_receive = trio.open_memory_channel[ProbeResult](kw.pop("buf", 64))
        export_send, self.exports = trio.open_memory_channel[EventMetrics](
            kw.pop("export_buf", 1000)
        )
        self.done = trio.Event()
        self.keeper = StatsKeeper(
            probe_type=kw.pop("probe_type", "http"),
            probe_name=kw.pop("probe_name", "web"),
            targets=targets,
            interval=kw.pop("interval", 2.0),
            **kw,
        )
        self.fn = partial(self.keeper.run, results_receive, export_send)
        self.nursery = nursery

    async def start(self) -> Keeper:
        async def run(task_status: trio.TaskStatus[None]) -> None:
            try:
                await self.fn(task_status=task_status)
            finally:
                self.done.set()

        await self.nursery.start(run)
        return self

    def exported(self) -> list[EventMetrics]:
        return drain(self.exports)  # type: ignore[arg-type]


async def test_cloudprober_stats_keeper(nursery: trio.Nursery, autojump_clock: Any) -> None:
    """cloudprober's TestStatsKeeper, checking every exported item (not half of them)."""
    targets = ["t1", "t2"]
    keeper = await Keeper(nursery, lambda: targets, interval=2.0).start()
    for t in targets:
        keeper.results.send_nowait(ProbeResult(t, True, 0.02, extras={"sent": 1, "rcvd": 1}))
    await trio.sleep(3.0)
    items = keeper.exported()
    assert sorted(em.label("dst") for em in items) == targets
    for em in items:
        assert em.kind is Kind.CUMULATIVE
        assert em.label("dst") in targets
        assert em.metric("total") == Int(1)
        assert em.metric("success") == Int(1)
        assert em.metric("sent") == Int(1)
        assert em.metric("rcvd") == Int(1)
        assert em.metric("latency") == Float(pytest.approx(0.02))


async def test_export_timing_and_accumulation(nursery: trio.Nursery, autojump_clock: Any) -> None:
    keeper = await Keeper(nursery, lambda: ["a"], interval=2.0).start()
    start = trio.current_time()
    keeper.results.send_nowait(ProbeResult("a", True, 0.001))
    await trio.sleep(1.9)
    assert keeper.exported() == []  # nothing before the first tick
    await trio.sleep(0.2)
    [first] = keeper.exported()
    assert first.metric("total") == Int(1)
    for ok in (True, False, True):
        keeper.results.send_nowait(ProbeResult("a", ok, 0.002, timeout=not ok))
    await trio.sleep(2.0)
    # With a failure the target has a gauge too: its last failure's reason and phase.
    second, gauge = sorted(keeper.exported(), key=lambda em: em.kind is Kind.GAUGE)
    assert gauge.metric("last_failure_reason") == String("timeout")
    assert gauge.metric("last_failure_phase") == String("unknown")
    assert second.metric("total") == Int(4)
    assert second.metric("success") == Int(3)
    assert second.metric("timeouts") == Int(1)
    assert second.metric("latency") == Float(pytest.approx(0.001 + 0.002 + 0.002))
    # The export is a clone: later results do not change what was sent.
    assert first.metric("total") == Int(1)
    assert trio.current_time() - start == pytest.approx(4.1)


async def test_first_result_seeds(nursery: trio.Nursery, autojump_clock: Any) -> None:
    keeper = await Keeper(nursery, lambda: ["a"], interval=1.0).start()
    keeper.results.send_nowait(ProbeResult("a", True, extras={"codes": Map("code", {"200": 1})}))
    keeper.results.send_nowait(ProbeResult("a", True, extras={"codes": Map("code", {"500": 1})}))
    await trio.sleep(1.5)
    [em] = keeper.exported()
    assert em.metric("codes") == Map("code", {"200": 1, "500": 1})
    assert em.metric("total") == Int(2)


async def test_targets_read_each_tick(nursery: trio.Nursery, autojump_clock: Any) -> None:
    current = ["a", "b"]
    calls = 0

    def targets() -> list[str]:
        nonlocal calls
        calls += 1
        return list(current)

    keeper = await Keeper(nursery, targets, interval=1.0).start()
    for t in ("a", "b"):
        keeper.results.send_nowait(ProbeResult(t, True))
    await trio.sleep(1.5)
    assert sorted(em.label("dst") for em in keeper.exported()) == ["a", "b"]
    current = ["a"]  # b removed: no longer exported, but its results are still counted
    keeper.results.send_nowait(ProbeResult("b", True))
    await trio.sleep(1.0)
    assert [em.label("dst") for em in keeper.exported()] == ["a"]
    current = ["a", "b"]  # b back: its accumulator resumes
    await trio.sleep(1.0)
    by_dst = {em.label("dst"): em for em in keeper.exported()}
    assert by_dst["b"].metric("total") == Int(2)
    assert by_dst["a"].metric("total") == Int(1)
    assert calls == 3


async def test_target_without_results_exports_nothing(
    nursery: trio.Nursery, autojump_clock: Any
) -> None:
    keeper = await Keeper(nursery, lambda: ["a", "silent"], interval=1.0).start()
    keeper.results.send_nowait(ProbeResult("a", True))
    keeper.results.send_nowait(ProbeResult("unlisted", True))
    await trio.sleep(3.5)
    items = keeper.exported()
    assert [em.label("dst") for em in items] == ["a", "a", "a"]


async def test_labels(nursery: trio.Nursery, autojump_clock: Any) -> None:
    keeper = await Keeper(
        nursery,
        lambda: ["a"],
        interval=1.0,
        probe_type="http",
        probe_name="web",
        extra_labels={"zone": "z1", "dst": "overridden?", "probe": "no"},
    ).start()
    keeper.results.send_nowait(ProbeResult("a", True))
    await trio.sleep(2.5)
    items = keeper.exported()
    assert len(items) == 2
    for em in items:
        assert list(em.labels.items()) == [
            ("ptype", "http"),
            ("probe", "web"),
            ("dst", "a"),
            ("zone", "z1"),
        ]
    assert items[1].timestamp >= items[0].timestamp


async def test_exports_are_clones_with_fixed_labels(
    nursery: trio.Nursery, autojump_clock: Any
) -> None:
    keeper = await Keeper(nursery, lambda: ["a"], interval=1.0).start()
    keeper.results.send_nowait(ProbeResult("a", True))
    await trio.sleep(1.5)
    [first] = keeper.exported()
    # A consumer that scribbles on what it got changes nothing for the next export.
    first.add_label("scribble", "x")
    first.metric("total").value = 100  # type: ignore[union-attr]
    keeper.results.send_nowait(ProbeResult("a", True))
    await trio.sleep(1.0)
    [second] = keeper.exported()
    assert list(second.labels) == ["ptype", "probe", "dst"]
    assert second.metric("total") == Int(2)


async def test_gauges_exported_as_gauge(nursery: trio.Nursery, autojump_clock: Any) -> None:
    keeper = await Keeper(nursery, lambda: ["a"], interval=1.0).start()
    keeper.results.send_nowait(ProbeResult("a", True, gauges={"srtt": 0.5}))
    keeper.results.send_nowait(ProbeResult("a", True, gauges={"srtt": 0.25}))
    await trio.sleep(1.5)
    items = keeper.exported()
    kinds = {em.kind: em for em in items}
    assert set(kinds) == {Kind.CUMULATIVE, Kind.GAUGE}
    gauge = kinds[Kind.GAUGE]
    assert gauge.metric("srtt") == Float(0.25)  # the latest wins
    assert gauge.metric("total") is None
    assert gauge.label("dst") == "a"
    assert gauge.label("ptype") == "http"
    assert kinds[Kind.CUMULATIVE].metric("srtt") is None


async def test_latency_distribution_and_unit(nursery: trio.Nursery, autojump_clock: Any) -> None:
    keeper = await Keeper(
        nursery,
        lambda: ["a"],
        interval=1.0,
        latency_unit=1e-3,
        latency_distribution=Distribution.explicit([0, 10, 100]),
    ).start()
    for latency in (0.005, 0.05, 0.5, 0.006):
        keeper.results.send_nowait(ProbeResult("a", True, latency))
    await trio.sleep(1.5)
    [em] = keeper.exported()
    dist = em.metric("latency")
    assert isinstance(dist, Distribution)
    assert dist.bucket_counts == [0, 2, 1, 1]
    assert dist.sum == pytest.approx(561.0)


async def test_end_of_channel_final_export(nursery: trio.Nursery, autojump_clock: Any) -> None:
    keeper = await Keeper(nursery, lambda: ["a", "b"], interval=10.0).start()
    keeper.results.send_nowait(ProbeResult("a", True))
    keeper.results.send_nowait(ProbeResult("b", False))
    await trio.sleep(1.0)
    keeper.results.close()
    with trio.fail_after(0.1):
        await keeper.done.wait()
    items = []
    async for em in keeper.exports:  # ends: the keeper closed its export channel
        items.append(em)
    counters = [em for em in items if em.kind is Kind.CUMULATIVE]
    assert sorted((em.label("dst"), em.metric("success")) for em in counters) == [
        ("a", Int(1)),
        ("b", Int(0)),
    ]
    [gauge] = [em for em in items if em.kind is Kind.GAUGE]  # b's last failure
    assert (gauge.label("dst"), gauge.metric("last_failure_reason")) == ("b", String("other"))


async def test_bad_result_is_logged_not_fatal(
    nursery: trio.Nursery, autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    keeper = await Keeper(nursery, lambda: ["a"], interval=1.0).start()
    keeper.results.send_nowait(ProbeResult("a", True, extras={"n": 1}))
    keeper.results.send_nowait(ProbeResult("a", True, extras={"n": 1.5}))  # type changed
    keeper.results.send_nowait(ProbeResult("a", True, extras={"n": 2}))
    with caplog.at_level(logging.WARNING, logger="trioprobe.stats"):
        await trio.sleep(1.5)
    [em] = keeper.exported()
    assert em.metric("n") == Int(3)
    assert em.metric("total") == Int(2)  # the bad result was left out whole
    assert "'a'" in caplog.text
    assert "not added" in caplog.text


async def test_accepts_results_while_export_stalls(
    nursery: trio.Nursery, autojump_clock: Any
) -> None:
    # Nobody reads the export channel (buffer 0) until the end.
    keeper = await Keeper(nursery, lambda: ["a"], interval=1.0, buf=4, export_buf=0).start()
    keeper.results.send_nowait(ProbeResult("a", True))
    await trio.sleep(1.5)  # the first export is now stuck in the exporter
    sent = 1
    # A whole interval's worth of results, far more than the 4-slot buffer, must go through.
    with trio.fail_after(0.9):
        for _ in range(90):
            await keeper.results.send(ProbeResult("a", True))
            sent += 1
            await trio.sleep(0.01)
    keeper.results.close()
    items = [em async for em in keeper.exports]
    assert items[-1].metric("total") == Int(sent)


async def test_cancellation_leaves_no_task(autojump_clock: Any) -> None:
    async with assert_no_leaks(threads=False, fds=False):
        async with trio.open_nursery() as nursery:
            keeper = await Keeper(nursery, lambda: ["a"], interval=1.0, export_buf=0).start()
            keeper.results.send_nowait(ProbeResult("a", True))
            await trio.sleep(1.5)  # the exporter is blocked sending
            assert nursery.child_tasks
            nursery.cancel_scope.cancel()
        assert keeper.done.is_set()


async def test_rejects_bad_interval() -> None:
    send, receive = trio.open_memory_channel[ProbeResult](1)
    esend, ereceive = trio.open_memory_channel[EventMetrics](1)
    with pytest.raises(ValueError, match="interval"):
        await stats_keeper(receive, esend, probe_type="x", probe_name="y", targets=list, interval=0)
    for ch in (send, receive, esend, ereceive):
        ch.close()


async def test_function_form_runs_a_keeper(nursery: trio.Nursery, autojump_clock: Any) -> None:
    """``stats_keeper(...)`` (public before StatsKeeper) is still the same keeper in one call."""
    send, receive = trio.open_memory_channel[ProbeResult](8)
    export_send, export_receive = trio.open_memory_channel[EventMetrics](8)
    await nursery.start(
        partial(
            stats_keeper,
            receive,
            export_send,
            probe_type="http",
            probe_name="web",
            targets=lambda: ["a"],
            interval=1.0,
            extra_labels={"zone": "z1"},
            export_up=True,
        )
    )
    send.send_nowait(ProbeResult("a", False))
    send.close()
    items = [em async for em in export_receive]  # final export, then the keeper closes it
    assert [(em.kind, em.label("zone")) for em in items] == [
        (Kind.CUMULATIVE, "z1"),
        (Kind.GAUGE, "z1"),
    ]
    assert items[1].metric("up") == Int(0)


async def test_fold_and_snapshot_are_steps_of_their_own() -> None:
    """The keeper's two steps, without its task: what a caller owning its own loop would use."""
    labels = {"zone": "z1"}
    seen: list[ProbeResult] = []
    keeper = StatsKeeper(
        probe_type="http",
        probe_name="web",
        targets=lambda: ["a", "b"],
        interval=1.0,
        extra_labels=labels,
        observe=seen.append,
        export_up=True,
    )
    labels["zone"] = "changed later"  # the keeper took a copy
    assert await keeper.snapshot(1.0) == []  # no results yet: nothing to export
    results = [ProbeResult("a", True, 0.5), ProbeResult("a", False, timeout=True)]
    for result in results:
        keeper.fold(result)
    assert seen == results
    cumulative, gauge = await keeper.snapshot(123.0)
    assert cumulative.metric("total") == Int(2)
    assert cumulative.metric("timeouts") == Int(1)
    assert cumulative.metric("latency") == Float(0.5)
    assert gauge.metric("up") == Int(0)
    for em in (cumulative, gauge):
        assert em.timestamp == 123.0
        assert dict(em.labels) == {"ptype": "http", "probe": "web", "dst": "a", "zone": "z1"}
    keeper.fold(ProbeResult("a", True, 0.25))
    assert cumulative.metric("total") == Int(2)  # a snapshot is a copy
    again, _ = await keeper.snapshot(124.0)
    assert again.metric("total") == Int(3)


def test_keeper_rejects_bad_interval() -> None:
    with pytest.raises(ValueError, match="stats interval must be > 0, got -1"):
        StatsKeeper(probe_type="x", probe_name="y", targets=list, interval=-1)


async def test_a_large_export_keeps_folding_between_its_slices(autojump_clock: Any) -> None:
    """An export of many targets is cloned a slice at a time, and the results waiting meanwhile
    are folded between slices (they do not queue up to the probes); each target's clone is one
    consistent state: its counters agree with each other."""
    targets = [f"t{i}" for i in range(200)]
    keeper = StatsKeeper(probe_type="http", probe_name="web", targets=lambda: targets, interval=1)
    for target in targets:
        keeper.fold(ProbeResult(target, True, 0.1, timestamp=1.0))
    send, pending = trio.open_memory_channel[ProbeResult](1000)
    for target in reversed(targets):  # arrived after the tick began: folded during the export
        send.send_nowait(ProbeResult(target, False, timestamp=2.0))
    async with counting_steps() as steps:
        batch = await keeper.snapshot(3.0, pending=pending)
    assert steps.count >= 200 // 16  # many steps, not one
    with pytest.raises(trio.WouldBlock):
        pending.receive_nowait()  # every waiting result was folded
    cumulative = [em for em in batch if em.kind is Kind.CUMULATIVE]
    assert [em.label("dst") for em in cumulative] == targets
    totals = set()
    for em in cumulative:
        total, success = em.metric("total"), em.metric("success")
        assert isinstance(total, Int)
        assert isinstance(success, Int)
        assert success.value == 1
        assert total.value in (1, 2)
        totals.add(total.value)
    assert totals == {1, 2}  # early targets cloned before their second result, later ones after
    final = await keeper.snapshot(4.0)
    assert all(em.metric("total") == Int(2) for em in final if em.kind is Kind.CUMULATIVE)


class _StepNumbers(trio.abc.Instrument):
    """Numbers every task step, so a test can tell whether two things happened in one step."""

    def __init__(self) -> None:
        self.step = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.step += 1


async def test_a_tick_after_a_batch_starts_its_export_in_a_step_of_its_own(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    """A tick that comes due while a batch of results arrives: the keeper folds the batch, then
    clones the first export slice only after a checkpoint. In one step the two made it twice as
    long (1,022 calls against tests/core/test_step_work_guard.py's 1,000 on a busy machine, the
    only place that saw it). Steps are numbered by an instrument, never timed."""
    steps = _StepNumbers()
    folded_in: list[int] = []
    listed_in: list[int] = []

    def listed() -> list[str]:
        listed_in.append(steps.step)
        return [f"t{i}" for i in range(32)]

    keeper = await Keeper(
        nursery, listed, interval=1.0, observe=lambda _: folded_in.append(steps.step)
    ).start()
    for i in range(32):
        keeper.results.send_nowait(ProbeResult(f"t{i}", True, 0.1))
    await trio.testing.wait_all_tasks_blocked()
    assert listed_in == []  # no tick yet: everything folded, the keeper waits for more
    trio.lowlevel.add_instrument(steps)
    try:
        # The tick comes due and a batch arrives with nothing run in between, so the keeper
        # wakes with both: results to fold and an export to start.
        mock_clock.jump(1.5)
        for i in range(_FOLDS_PER_STEP):
            keeper.results.send_nowait(ProbeResult(f"t{i}", True, 0.1))
        await trio.testing.wait_all_tasks_blocked()
    finally:
        trio.lowlevel.remove_instrument(steps)
    batch_folded = folded_in[-_FOLDS_PER_STEP:]
    assert len(set(batch_folded)) == 1  # the batch was folded in one step: the case at issue
    assert len(listed_in) == 1  # the tick's export began
    assert listed_in[0] > batch_folded[0]  # ... after the batch, and not in the same step
    exported = keeper.exported()
    assert len(exported) == 32
    assert exported[0].metric("total") == Int(2)  # the batch is in this tick's export


async def test_a_targets_two_accumulators_share_one_label_dict() -> None:
    """Issue 19, memory per target: the counters' and the gauges' accumulators (and so their
    exported clones) hold one label dict between them, copied only if one of them changes."""
    keeper = StatsKeeper(probe_type="http", probe_name="web", targets=lambda: ["a"], interval=1)
    keeper.fold(ProbeResult("a", True, 0.5))
    (cumulative,) = await keeper.snapshot(1.0)  # no gauges yet
    keeper.fold(ProbeResult("a", False, error="boom"))  # the gauges' accumulator begins
    cumulative, gauge = await keeper.snapshot(2.0)
    assert cumulative.labels is gauge.labels
    assert dict(gauge.labels) == {"ptype": "http", "probe": "web", "dst": "a"}
    assert gauge.metric("last_failure_reason") is not None
    gauge.add_label("zone", "z1")  # copy on write: the other keeps its labels
    assert "zone" not in cumulative.labels
    both = StatsKeeper(
        probe_type="http", probe_name="web", targets=lambda: ["a"], interval=1, export_up=True
    )
    both.fold(ProbeResult("a", True, 0.5))  # both accumulators from the first result
    cumulative, gauge = await both.snapshot(1.0)
    assert cumulative.labels is gauge.labels
    assert gauge.metric("up") == Int(1)
