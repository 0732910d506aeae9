"""The CLI's live view."""

from __future__ import annotations

import re
import sys
import tracemalloc
from collections.abc import Callable
from functools import partial

import pytest
from rich.console import Console

from trioprobe.alerting.health import Health
from trioprobe.alerting.state import AlertRule
from trioprobe.cli import _live
from trioprobe.cli._live import LiveStats, RecentWindow, format_ago, format_window
from trioprobe.failures import Failure, FailureReason, Phase
from trioprobe.results import ProbeResult

from ..loop_steps import counting_steps


def test_table_shows_text_with_brackets_verbatim() -> None:
    # Errors quote regexes like /[a-z]+/ and "[/]" would be a markup error: cells are data.
    live = LiveStats()
    live.observe("p[1]", ProbeResult("http://h/[x]", True, 0.002, gauges={"srtt": 0.001}))
    live.observe("p[1]", ProbeResult("http://h/[x]", False, error="body did not match /[a-z]+/"))
    live.observe("p[1]", ProbeResult("http://h/[x]", False, error="body did not match /[/]h/"))
    console = Console(record=True, width=200)
    console.print(live.table())
    text = console.export_text()
    assert "body did not match /[/]h/" in text
    assert "other" in text  # the reason column: a result made without a classified failure
    assert "http://h/[x]" in text
    assert "p[1]" in text
    assert "33.3%" in text
    assert "1.00ms" in text


def test_lines_give_rate_percentiles_gauges_and_last_error() -> None:
    live = LiveStats()
    for latency in (0.001, 0.002, 0.003):
        live.observe("web", ProbeResult("a", True, latency, gauges={"srtt": 0.5}))
    failure = Failure(FailureReason.HTTP_STATUS)
    live.observe("web", ProbeResult("a", False, error="HTTP 503", failure=failure))
    (line,) = live.lines()
    # Percentiles are estimates from 20 %-wide buckets: within 10 % of the exact 2 ms and 3 ms.
    match = re.fullmatch(
        r"web a total=4 success=75.0% last_1m=75.0% state=up p50=([\d.]+)ms p99=([\d.]+)ms "
        r"srtt=500.00ms reason=http_status last_error='HTTP 503'",
        line,
    )
    assert match is not None, line
    assert float(match.group(1)) == pytest.approx(2.0, rel=0.1)
    assert float(match.group(2)) == pytest.approx(3.0, rel=0.1)


def test_reason_column_shows_the_current_failure_only() -> None:
    live = LiveStats()
    timed_out = Failure(FailureReason.TIMEOUT, Phase.TLS)
    live.observe("web", ProbeResult("a", False, error="timed out", failure=timed_out))
    console = Console(record=True, width=200)
    console.print(live.table())
    text = console.export_text()
    header, *_ = (line for line in text.splitlines() if "reason" in line)
    assert "timeout (tls)" in text
    assert header.index("state") < header.index("reason") < header.index("total")
    live.observe("web", ProbeResult("a", True, 0.001))
    console = Console(record=True, width=200)
    console.print(live.table())
    assert "timeout (tls)" not in console.export_text()  # recovered: no stale reason


def test_latency_summary_is_bounded_and_follows_recent_results() -> None:
    live = LiveStats()
    for _ in range(5000):
        live.observe("web", ProbeResult("a", True, 0.001))
    stats = live.targets[("web", "a")]
    assert stats.percentiles()[0] == pytest.approx(0.001, rel=0.1)
    # The target slows down: after 2,000 slower results the old ones no longer count.
    for _ in range(2000):
        live.observe("web", ProbeResult("a", True, 0.050))
    assert stats.percentiles()[0] == pytest.approx(0.050, rel=0.1)
    # Memory per target is two fixed histograms, whatever the number of results.
    assert stats._previous is not None
    assert stats._current is not None
    assert len(stats._current) == len(stats._previous) <= 102


def test_a_target_row_holds_under_a_kilobyte_and_a_half() -> None:
    """Issue 19, memory per target: a row with both latency histograms in use, counted in
    bytes by tracemalloc (2.1 KiB a target before the counts became 16-bit arrays and the
    window's buckets machine numbers; 2,934 bytes before, 1,336 after, measured here)."""
    live = LiveStats(Health())  # the runner's Health, fed by the runner: not the row's memory
    live.observe("web", ProbeResult("warm-up", True, 0.001))  # the view's own first allocations
    results = [ProbeResult(f"http://t{i}/", True, 0.001 * (1 + i % 7)) for i in range(200)]
    tracemalloc.start()
    try:
        for _ in range(1_200):  # past _RECENT: both histograms of every row in use
            for result in results:
                live.observe("web", result)
        held = tracemalloc.get_traced_memory()[0] / len(results)
    finally:
        tracemalloc.stop()
    assert held < 1_500
    assert live.targets[("web", "http://t3/")].percentiles()[0] == pytest.approx(0.004, rel=0.2)


def test_table_shows_loop_lag_and_config_errors() -> None:
    live = LiveStats()
    live.observe("web", ProbeResult("http://a/", True, 0.001))
    for _ in range(100):
        live.observe_loop_lag(0.030)
    live.config_errors = lambda: {("web", "nope"): "t.txt:3: bad target 'nope': no host"}
    table = live.table()
    # probe target state reason total success last-1m p50 p99 error (no gauges)
    assert len(table.columns) == 10
    console = Console(record=True, width=250)
    console.print(table)
    text = console.export_text()
    assert "event loop lag" in text
    assert "latencies may be inflated by this process" in text
    assert "config error" in text
    assert "t.txt:3: bad target 'nope'" in text


def test_a_table_cut_to_the_terminal_shows_failing_targets_first() -> None:
    live = LiveStats()
    for i in range(2000):
        live.observe("web", ProbeResult(f"http://t{i:04}/", True, 0.001))
    for i in (1500, 700):  # failing, in the order they began to
        live.observe("web", ProbeResult(f"http://t{i:04}/", False, error="HTTP 503"))
    live.observe("web", ProbeResult("http://t0001/", False, error="HTTP 503"))
    live.observe("web", ProbeResult("http://t0001/", True, 0.001))  # recovered: not failing
    table = live.table(max_rows=5)
    assert table.row_count == 5
    console = Console(record=True, width=250)
    console.print(table)
    text = console.export_text()
    targets = re.findall(r"http://t(\d{4})/", text)
    assert targets == ["1500", "0700", "0000", "0001", "0002"]
    assert "5 of 2000 targets shown, failing first (2 failing)" in text
    # Every row when they fit.
    assert live.table(max_rows=2000).row_count == 2000


def _calls(fn: Callable[[], object]) -> int:
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def test_a_cut_table_costs_the_same_at_200_and_4000_targets() -> None:
    costs = []
    for n in (200, 4000):
        live = LiveStats()
        for i in range(n):
            live.observe("web", ProbeResult(f"http://t{i}/", i % 2 == 0, 0.001))
        costs.append(_calls(partial(live.table, max_rows=40)))
    assert costs[1] <= costs[0] * 1.1


def _render(live: LiveStats, width: int = 250) -> str:
    console = Console(record=True, width=width)
    console.print(live.table())
    return console.export_text()


def test_recovery_clears_the_error_and_shows_when_it_last_failed() -> None:
    now = 1_700_000_000.0
    live = LiveStats(clock=lambda: now)
    for i in range(3):
        live.observe("web", ProbeResult("a", False, error="HTTP 503", timestamp=now - 130 + i))
    down = _render(live)
    assert "down" in down
    assert "HTTP 503" in down
    for i in range(30):
        live.observe("web", ProbeResult("a", True, 0.001, timestamp=now - 30 + i))
    text = _render(live)
    row = next(line for line in text.splitlines() if " a " in line)
    assert " up " in row
    assert "HTTP 503" not in row
    assert "last failure 2 min ago" in row
    # Since start: 30 of 33; over the last minute: all of them.
    assert "90.9%" in row
    assert "100.0%" in row
    (line,) = live.lines()
    assert "state=up" in line
    assert "last_failure='2 min ago'" in line
    assert "HTTP 503" not in line


def test_a_failure_of_an_up_target_shows_its_error_while_current() -> None:
    live = LiveStats()
    for _ in range(2):
        live.observe("web", ProbeResult("a", True, 0.001))
    live.observe("web", ProbeResult("a", False, error="HTTP 503"))
    (line,) = live.lines()
    # One failure does not make it down (the alert's rule), but the error is current.
    assert "state=up" in line
    assert "last_error='HTTP 503'" in line


def test_recent_window_forgets_old_results() -> None:
    window = RecentWindow(60.0)
    for t in range(60):
        window.add(1000.0 + t, t % 2 == 0)
    assert window.counts(1059.0) == (60, 30)
    # A minute later only what came since counts; two minutes later nothing.
    window.add(1110.0, True)
    # 5 s buckets: the window ending at 1110 holds 1055-1059 (5 results, 2 of them ok) + 1.
    assert window.counts(1110.0) == (5 + 1, 2 + 1)
    assert window.counts(1300.0) == (0, 0)


def test_window_and_ago_formats() -> None:
    assert [format_window(s) for s in (60, 300, 90, 3600)] == ["1m", "5m", "90s", "1h"]
    assert [format_ago(s) for s in (0.2, 12, 150, 3 * 3600)] == [
        "just now",
        "12 s ago",
        "2 min ago",
        "3 h ago",
    ]


async def test_state_column_is_the_runners_health_verdict() -> None:
    # The runner's Health (here with an alert rule of down-after-one-failure) decides the state,
    # so the table, the status page and the `up` metric agree; the view does not run a second
    # state machine of its own.
    health = Health({"web": AlertRule(failure_threshold=1, success_threshold=1)})
    live = LiveStats()
    live.health = health
    result = ProbeResult("a", False, error="refused")
    live.observe("web", result)
    assert live.states() == {}  # the runner feeds the Health, not the view
    health.feed("web", result)
    assert live.states() == {("web", "a"): "down"}
    assert "DOWN: web a" in live.changes()[0]
    ok = ProbeResult("a", True, 0.001)
    live.observe("web", ok)
    health.feed("web", ok)
    [line] = live.changes()
    assert line.startswith("up: web a ")


async def test_refreshes_are_built_in_short_steps_in_target_order() -> None:
    """``render_lines``/``render_changes`` give what ``lines``/``changes`` give, in sorted target
    order kept as targets appear, a slice of targets per event-loop step (issue 19: a refresh
    of 10,000 targets must not be one step)."""
    health = Health({"web": AlertRule(failure_threshold=1, success_threshold=1)})
    live = LiveStats()
    live.health = health
    names = [f"t{i:03d}" for i in range(100)]
    for name in reversed(names):  # appear out of order
        result = ProbeResult(name, name.endswith("7"), 0.001, error="refused")
        live.observe("web", result)
        health.feed("web", result)
    async with counting_steps() as steps:
        lines = await live.render_lines()
        changes = await live.render_changes()
    assert lines == live.lines()
    assert [line.split()[1] for line in lines] == names
    assert steps.count >= 2 * (100 // _live._LINES_PER_STEP)
    assert len(changes) == 100
    assert sum(line.startswith("DOWN: ") for line in changes) == 90
    assert live.changes() == []  # reported once
