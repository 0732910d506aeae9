"""The CLI's live view."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

from trioprobe.cli._live import LiveStats
from trioprobe.results import ProbeResult


def test_table_shows_text_with_brackets_verbatim() -> None:
    # Errors quote regexes like /[a-z]+/ and "[/]" would be a markup error: cells are data.
    live = LiveStats()
    live.observe("p[1]", ProbeResult("http://h/[x]", False, error="body did not match /[a-z]+/"))
    live.observe("p[1]", ProbeResult("http://h/[x]", False, error="body did not match /[/]h/"))
    live.observe("p[1]", ProbeResult("http://h/[x]", True, 0.002, gauges={"srtt": 0.001}))
    console = Console(record=True, width=200)
    console.print(live.table())
    text = console.export_text()
    assert "body did not match /[/]h/" in text
    assert "http://h/[x]" in text
    assert "p[1]" in text
    assert "33.3%" in text
    assert "1.00ms" in text


def test_lines_give_rate_percentiles_gauges_and_last_error() -> None:
    live = LiveStats()
    for latency in (0.001, 0.002, 0.003):
        live.observe("web", ProbeResult("a", True, latency, gauges={"srtt": 0.5}))
    live.observe("web", ProbeResult("a", False, error="HTTP 503"))
    (line,) = live.lines()
    # Percentiles are estimates from 20 %-wide buckets: within 10 % of the exact 2 ms and 3 ms.
    match = re.fullmatch(
        r"web a total=4 success=75.0% p50=([\d.]+)ms p99=([\d.]+)ms srtt=500.00ms "
        r"last_error='HTTP 503'",
        line,
    )
    assert match is not None, line
    assert float(match.group(1)) == pytest.approx(2.0, rel=0.1)
    assert float(match.group(2)) == pytest.approx(3.0, rel=0.1)


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
    assert stats.previous is not None
    assert len(stats.current.bucket_counts) == len(stats.previous.bucket_counts) <= 102


def test_table_shows_loop_lag_and_config_errors() -> None:
    live = LiveStats()
    live.observe("web", ProbeResult("http://a/", True, 0.001))
    for _ in range(100):
        live.observe_loop_lag(0.030)
    live.config_errors = lambda: {("web", "nope"): "t.txt:3: bad target 'nope': no host"}
    table = live.table()
    assert len(table.columns) == 7  # probe target total success p50 p99 error (no gauges)
    console = Console(record=True, width=250)
    console.print(table)
    text = console.export_text()
    assert "event loop lag" in text
    assert "latencies may be inflated by this process" in text
    assert "config error" in text
    assert "t.txt:3: bad target 'nope'" in text
