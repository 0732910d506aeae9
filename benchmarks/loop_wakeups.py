"""What one wake-up of a Trio loop costs in CPU, by how many wake-ups a second the loop has.

``run --workers 2`` splits the probes between two event loops: each wakes up for half as many
probes, and a loop that goes idle between wake-ups pays more per wake-up (docs/fleet.md,
"Measured"). This measures that alone: N tasks, each sleeping until its own deadline once a
second (spread over the second like probes), and the process's CPU per wake-up; ``--grid``
also shows the tasks sleeping on a :class:`trioprobe._ticks.TickGrid` of that many seconds, as
probes do (fewer, fuller wake-ups of the loop; 0 is a plain ``trio.sleep_until`` per task).

Run: ``.venv/bin/python benchmarks/loop_wakeups.py [--tasks 150 500 1000] [--grid 0 0.01]``
"""

from __future__ import annotations

import argparse
import resource
from pathlib import Path

import trio

from trioprobe._ticks import TickGrid


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(tasks: int, grid: float, seconds: float) -> tuple[float, float]:
    """(CPU seconds per wake-up, CPU share of a core) of ``tasks`` tasks waking once a second."""
    wakes = 0
    tick_grid = TickGrid(grid) if grid else None

    async def task(i: int) -> None:
        nonlocal wakes
        due = trio.current_time() + i / tasks
        while True:
            if tick_grid is None:
                await trio.sleep_until(due)
            else:
                await tick_grid.sleep_until(due)
            wakes += 1
            due += 1.0

    async with trio.open_nursery() as nursery:
        if tick_grid is not None:
            nursery.start_soon(tick_grid.run)
        for i in range(tasks):
            nursery.start_soon(task, i)
        await trio.sleep(1.5)
        c0, w0 = cpu(), wakes
        await trio.sleep(seconds)
        c1, w1 = cpu(), wakes
        nursery.cancel_scope.cancel()
    return (c1 - c0) / max(1, w1 - w0), (c1 - c0) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[150, 500, 1000])
    parser.add_argument("--grid", type=float, nargs="+", default=[0.0, 0.01])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    for tasks in args.tasks:
        for grid in args.grid:
            per_wake, share = trio.run(measure, tasks, grid, args.seconds)
            print(
                f"{tasks} wake-ups/s, grid {grid * 1e3:g} ms: {per_wake * 1e6:.0f} us CPU per "
                f"wake-up, {share * 100:.1f} % of a core"
            )


if __name__ == "__main__":
    main()
