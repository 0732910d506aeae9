"""The CLI's live view."""

from __future__ import annotations

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
    assert line == (
        "web a total=4 success=75.0% p50=2.00ms p99=3.00ms srtt=500.00ms last_error='HTTP 503'"
    )
