"""The status page's rendering (escaping, JSON, sparkline) and its memory per target."""

from __future__ import annotations

import html.parser
import json
import re
import tracemalloc

import httpx
import pytest
import trio

from trioprobe._asgi import serve_asgi
from trioprobe.alerting import Health, StatusPage, render_html, render_json
from trioprobe.alerting.history import BUCKET_SECONDS, History
from trioprobe.failures import Failure, FailureReason
from trioprobe.results import ProbeResult
from trioprobe.statuspage import _common
from trioprobe.statuspage.overview import PAGE_SIZE

HOSTILE = "<script>document.title='pwned'</script>"


class _Rows(html.parser.HTMLParser):
    """Collects (data-target, data-state) of each row and every tag name seen."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, str]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        a = dict(attrs)
        if tag == "tr" and "data-target" in a:
            self.rows.append((a["data-target"] or "", a["data-state"] or ""))


def _health() -> Health:
    health = Health()
    for _ in range(3):
        health.feed("web", ProbeResult(HOSTILE, False, 0.0, error=f"bad <b>{HOSTILE}</b>"))
        health.feed("web", ProbeResult("http://ok/", True, 0.004))
    return health


async def test_page_escapes_targets_and_errors(autojump_clock: trio.abc.Clock) -> None:
    page = render_html(_health(), refresh=3)
    parser = _Rows()
    parser.feed(page)
    assert parser.rows == [(HOSTILE, "down"), ("http://ok/", "up")]
    assert "script" not in parser.tags
    assert "b" not in parser.tags
    assert "&lt;script&gt;" in page
    assert '<meta http-equiv="refresh" content="3">' in page
    # No external asset of any kind: no src/href attribute at all.
    assert "src=" not in page
    # Links only within the page's own server (filters, detail pages): nothing external.
    assert re.findall(r'href="([^"]*)"', page)
    assert all(h.startswith("/status") for h in re.findall(r'href="([^"]*)"', page))
    assert "<svg" in page


async def test_json_lists_every_target(autojump_clock: trio.abc.Clock) -> None:
    rows = json.loads(render_json(_health()))["targets"]
    assert [(r["target"], r["state"], r["firing"]) for r in rows] == [
        (HOSTILE, "down", False),  # no [[alert]] watches it: down, but nothing fires
        ("http://ok/", "up", False),
    ]
    assert rows[1]["success_ratio_5m"] == 1.0
    assert rows[1]["latency_p50"] == 0.004


async def test_json_and_page_show_the_last_failure_reason(autojump_clock: trio.abc.Clock) -> None:
    health = Health()
    expired = Failure(FailureReason.TLS_EXPIRED)
    for _ in range(3):
        health.feed("web", ProbeResult("https://a/", False, error="cert expired", failure=expired))
    failed = Failure(FailureReason.VALIDATION, validator="regex")
    health.feed("web", ProbeResult("https://b/", False, error="no match", failure=failed))
    health.feed("web", ProbeResult("https://c/", True, 0.001))
    rows = {r["target"]: r for r in json.loads(render_json(health))["targets"]}
    assert (rows["https://a/"]["reason"], rows["https://a/"]["phase"]) == ("tls_expired", "tls")
    assert rows["https://b/"]["validator"] == "regex"
    assert rows["https://c/"]["reason"] is None  # never failed
    page = render_html(health, refresh=3)
    assert '<span class="reason">tls_expired</span>: cert expired' in page


async def test_served_over_http(autojump_clock: trio.abc.Clock) -> None:
    del autojump_clock  # real sockets below: the mock clock only runs the page's own timers
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_asgi, StatusPage(_health()))
        async with httpx.AsyncClient() as client:
            page = await client.get(f"{url}/status")
            data = await client.get(f"{url}/status.json")
            post = await client.post(f"{url}/status")
            missing = await client.get(f"{url}/nope")
        nursery.cancel_scope.cancel()
    assert page.headers["content-type"].startswith("text/html")
    assert "&lt;script&gt;" in page.text
    assert len(data.json()["targets"]) == 2
    assert (post.status_code, missing.status_code) == (405, 404)


def test_history_ratios_percentiles_and_sparkline() -> None:
    h = History()
    for minute in range(90):
        for k in range(10):
            h.add(minute * BUCKET_SECONDS + k, success=k != 0 or minute < 80, latency=0.001 * k)
    now = 89 * BUCKET_SECONDS + 30
    assert h.success_ratio(now, 300) == 0.9  # the last 5 minutes each had one failure in ten
    assert h.success_ratio(now, 3600) == (600 - 10) / 600
    assert h.percentile(0.5) is not None
    assert h.percentile(0.99) == pytest.approx(0.009)
    series = h.series(now)
    assert len(series) == 60
    assert series[-1][1:] == (10, 1)
    assert h.success_ratio(now + 7200, 3600) is None  # all of it has aged out


def test_memory_per_target_is_bounded() -> None:
    """Memory per target stays the same however many results come in (docs/alerting.md)."""

    async def fill(results_per_target: int) -> float:
        health = Health()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(100):
            target = f"http://10.0.{i // 256}.{i % 256}:8080/health"
            for k in range(results_per_target):
                health.feed("p", ProbeResult(target, k % 7 != 0, 0.01, error="refused"))
        per_target = (tracemalloc.get_traced_memory()[0] - before) / 100
        del health
        return per_target

    tracemalloc.start()
    try:
        few = trio.run(fill, 50)
        many = trio.run(fill, 600)  # past the latency ring's 256
    finally:
        tracemalloc.stop()
    assert many < 8 * 1024, many
    assert abs(many - few) < 512, (few, many)


async def test_a_large_page_lets_the_probes_run_while_it_renders(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The page yields whenever it has held the loop for STEP_BUDGET; with no budget at all it
    # must yield at every target it looks at and every row it renders, whatever the machine.
    monkeypatch.setattr(_common, "STEP_BUDGET", 0.0)
    health = Health()
    for i in range(400):
        health.feed("p", ProbeResult(f"t{i}", True, 0.001))
    ticks = 0
    sent: list[dict[str, object]] = []

    async def other_task() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async def receive() -> dict[str, object]:
        raise AssertionError("not called for GET")

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/status"}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        await trio.lowlevel.checkpoint()
        ticks = 0
        await StatusPage(health)(scope, receive, send)  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()
    # 400 targets looked at, 100 rows copied and 100 rendered: the other task ran between each.
    assert ticks >= 400 + 2 * PAGE_SIZE
    body = sent[1]["body"]
    assert isinstance(body, bytes)
    assert body.count(b"<tr class=") == PAGE_SIZE
    assert b'href="/status?page=4"' in body
