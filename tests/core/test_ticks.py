"""The one ticker (trioprobe._ticks.Ticker), under a mock clock: grid, lateness, missed ticks."""

from __future__ import annotations

import pytest
import trio

from trioprobe._ticks import WAKE_CHUNK, Tick, Ticker, TickGrid, spread_offset


async def test_ticks_stay_on_the_grid_with_no_lateness(autojump_clock: trio.abc.Clock) -> None:
    t0 = trio.current_time()
    ticker = Ticker(2.0)
    got = [await anext(ticker) for _ in range(3)]
    assert got == [Tick(t0 + 2.0, 0.0, 0), Tick(t0 + 4.0, 0.0, 0), Tick(t0 + 6.0, 0.0, 0)]
    assert ticker.missed == 0


async def test_skip_drops_the_ticks_an_overrun_covered(autojump_clock: trio.abc.Clock) -> None:
    t0 = trio.current_time()
    ticker = Ticker(1.0, first_at=t0 + 0.5)
    assert (await anext(ticker)).at == t0 + 0.5
    await trio.sleep(2.2)  # the caller's work overran: ticks at 1.5 and 2.5 were due
    tick = await anext(ticker)
    assert tick == Tick(t0 + 3.5, 0.0, 0)  # waits for the next one still ahead
    assert ticker.missed == 2
    await trio.sleep(1.0)  # exactly one interval: the tick due "now" is dropped as well
    assert (await anext(ticker)).at == t0 + 5.5
    assert ticker.missed == 3


async def test_a_late_first_tick_is_delivered_not_skipped(autojump_clock: trio.abc.Clock) -> None:
    # A target whose task first runs after its first tick was due (a batch of thousands added
    # at once) must still be probed in the first round: it overran nothing.
    t0 = trio.current_time()
    ticker = Ticker(5.0, first_at=t0 + 0.1)
    await trio.sleep(0.4)  # the task started 0.3 s after its first tick
    tick = await anext(ticker)
    assert tick.at == t0 + 0.1
    assert tick.lateness == pytest.approx(0.3)
    assert tick.missed == 0
    assert ticker.due == t0 + 5.1
    assert (await anext(ticker)) == Tick(t0 + 5.1, 0.0, 0)
    assert ticker.missed == 0


async def test_fire_delivers_the_overdue_tick_at_once_like_go(
    autojump_clock: trio.abc.Clock,
) -> None:
    t0 = trio.current_time()
    ticker = Ticker(1.0, late="fire")
    assert (await anext(ticker)).at == t0 + 1.0
    await trio.sleep(2.5)  # now t0 + 3.5: ticks at 2 and 3 are overdue
    tick = await anext(ticker)
    assert tick.at == t0 + 2.0
    assert tick.lateness == pytest.approx(1.5)
    assert tick.missed == 1  # the tick at 3 is dropped, 2 is the one kept
    assert ticker.due == t0 + 4.0  # back on the grid
    assert (await anext(ticker)) == Tick(t0 + 4.0, 0.0, 0)
    assert ticker.missed == 1


async def test_poll_serves_a_loop_that_waits_for_something_else(
    autojump_clock: trio.abc.Clock,
) -> None:
    t0 = trio.current_time()
    ticker = Ticker(10.0)
    assert ticker.poll() is None
    await trio.sleep(35.0)
    tick = ticker.poll()
    assert tick is not None
    assert (tick.at, tick.missed) == (t0 + 10.0, 2)
    assert tick.lateness == pytest.approx(25.0)
    assert ticker.due == t0 + 40.0
    assert ticker.poll() is None


async def test_lateness_is_how_long_the_loop_kept_the_tick_waiting(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A clock that jumps past the deadline stands for a loop that was busy elsewhere.
    ticker = Ticker(1.0)
    t0 = trio.current_time()

    async def stall() -> None:
        await trio.sleep_until(t0 + 0.999)
        autojump_clock.jump(0.3)  # type: ignore[attr-defined]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stall)
        tick = await anext(ticker)
    assert tick.at == t0 + 1.0
    assert tick.lateness == pytest.approx(0.299)
    assert tick.missed == 0


async def test_restart_moves_the_grid(autojump_clock: trio.abc.Clock) -> None:
    t0 = trio.current_time()
    ticker = Ticker(1.0)
    await trio.sleep(0.25)
    ticker.restart()
    assert (await anext(ticker)).at == pytest.approx(t0 + 1.25)
    assert trio.current_time() == pytest.approx(t0 + 1.25)
    ticker.restart(0.1)
    assert ticker.due == pytest.approx(t0 + 1.35)


def test_bad_arguments_are_refused() -> None:
    async def make(interval: float, late: str) -> None:
        Ticker(interval, late=late)

    with pytest.raises(ValueError, match="interval must be > 0"):
        trio.run(make, 0.0, "skip")
    with pytest.raises(ValueError, match="late must be"):
        trio.run(make, 1.0, "burst")


def test_spread_offsets_are_stable_and_within_the_interval() -> None:
    offsets = [spread_offset(f"host{i}:80", 5.0) for i in range(200)]
    assert all(0 < o <= 5.0 for o in offsets)
    assert offsets == [spread_offset(f"host{i}:80", 5.0) for i in range(200)]
    assert len(set(offsets)) == 200


async def test_a_grid_wakes_the_sleepers_of_a_slot_together_on_its_point(
    autojump_clock: trio.abc.Clock,
) -> None:
    grid = TickGrid(0.01)
    woke: dict[float, float] = {}

    async def sleeper(deadline: float) -> None:
        await grid.sleep_until(deadline)
        woke[deadline] = trio.current_time()

    t0 = trio.current_time()
    deadlines = [t0 + d for d in (0.101, 0.104, 0.1099, 0.111, 0.12)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(grid.run)
        for deadline in deadlines:
            nursery.start_soon(sleeper, deadline)
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    assert [woke[d] for d in deadlines] == pytest.approx(
        [grid.align(t0 + 0.11)] * 3 + [grid.align(t0 + 0.12)] * 2
    )
    assert all(woke[d] >= d for d in deadlines)
    # A deadline that is a grid point wakes on that point, not one slot later.
    assert grid.align(0.3) == pytest.approx(0.3)


async def test_a_ticker_on_a_grid_ticks_on_grid_points_without_drifting(
    autojump_clock: trio.abc.Clock,
) -> None:
    grid = TickGrid(0.01)
    ticks: list[Tick] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(grid.run)
        first = trio.current_time() + 0.123
        ticker = Ticker(1.005, first_at=first, grid=grid)  # not a multiple of the slot
        for _ in range(20):
            ticks.append(await anext(ticker))
        nursery.cancel_scope.cancel()
    # Each tick is the grid point at or after first + k * interval: the nominal schedule is
    # kept (20 rounded-up intervals would have drifted by up to 0.1 s), and the wait for the
    # grid point is not lateness.
    assert [t.at for t in ticks] == pytest.approx(
        [grid.align(first + k * 1.005) for k in range(20)]
    )
    assert all(t.lateness == pytest.approx(0) and t.missed == 0 for t in ticks)


async def test_a_crowded_slot_is_woken_a_chunk_per_scheduler_step(
    autojump_clock: trio.abc.Clock,
) -> None:
    grid = TickGrid(0.01)
    sleepers = 20 * WAKE_CHUNK
    grid_steps = 0
    woken = 0

    class GridSteps(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            nonlocal grid_steps
            grid_steps += task.name.endswith("TickGrid.run")

    async def sleeper() -> None:
        nonlocal woken
        await grid.sleep_until(deadline)
        woken += 1

    deadline = trio.current_time() + 0.5
    async with trio.open_nursery() as nursery:
        nursery.start_soon(grid.run)
        for _ in range(sleepers):
            nursery.start_soon(sleeper)
        await trio.sleep(0.1)  # all parked, the grid's timer set
        trio.lowlevel.add_instrument(instrument := GridSteps())
        await trio.sleep(0.5)
        trio.lowlevel.remove_instrument(instrument)
        nursery.cancel_scope.cancel()
    assert woken == sleepers
    assert grid_steps >= 20  # a step per chunk of sleepers


async def test_a_cancelled_sleeper_leaves_the_others_of_its_slot_alone(
    autojump_clock: trio.abc.Clock,
) -> None:
    grid = TickGrid(0.01)
    woke: list[str] = []

    async def sleeper(name: str) -> None:
        await grid.sleep_until(deadline)
        woke.append(name)

    deadline = trio.current_time() + 0.05
    async with trio.open_nursery() as nursery:
        nursery.start_soon(grid.run)
        nursery.start_soon(sleeper, "stays")
        with trio.move_on_after(0.01):
            await sleeper("cancelled")
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert woke == ["stays"]


@pytest.mark.parametrize("slot", [0.0, 5e-324, 0.0005, float("inf"), float("nan")])
def test_a_grid_needs_a_finite_slot_of_at_least_a_millisecond(slot: float) -> None:
    with pytest.raises(ValueError, match=r"slot must be at least 0\.001s and finite"):
        TickGrid(slot)
