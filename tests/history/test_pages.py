"""The status page, detail page, JSON API and badges over a real store."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio

from trioprobe.alerting import AlertRule, Health
from trioprobe.alerting.state import TargetHealth
from trioprobe.history import HistoryService
from trioprobe.history.service import slo_metrics
from trioprobe.results import ProbeResult
from trioprobe.specs import HistorySpec, ProbeSpec
from trioprobe.statuspage import StatusPage

HOSTILE = "http://127.0.0.1:18082/<script>alert(1)</script>"
GOOD = "http://127.0.0.1:18081/health"
PROBES = [
    ProbeSpec(name="web", type="http", targets=(GOOD, HOSTILE), slo=0.99),
    ProbeSpec(name="api", type="http", targets=("http://127.0.0.1:9/",)),
]


async def _get(page: StatusPage, path: str, query: str = "") -> tuple[int, str, str]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("no body")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raw = path.encode()
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": raw,
        "query_string": query.encode(),
    }
    await page(scope, receive, send)  # type: ignore[arg-type]
    headers = dict(sent[0]["headers"])
    return sent[0]["status"], headers[b"content-type"].decode(), sent[1]["body"].decode()


@pytest.fixture
async def page(tmp_path: Path) -> Any:
    now = time.time() // 60 * 60
    health = Health({"web": AlertRule("web-down"), "api": AlertRule("api-down")})
    service = HistoryService(HistorySpec(path=str(tmp_path / "h.sqlite")), PROBES)
    health.add_listener(service.on_transition)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        # 30 minutes: GOOD always up; HOSTILE down for minutes 10-14 with a reason to escape.
        for m in range(30, 0, -1):
            for k in range(6):
                t = now - 60 * m + 10 * k
                down = 15 <= m < 20
                for target, ok in ((GOOD, True), (HOSTILE, not down)):
                    result = ProbeResult(
                        target,
                        ok,
                        0.002 + 0.001 * k,
                        timestamp=t,
                        error=None if ok else "HTTP 503 <b>bold</b>",
                    )
                    health.feed("web", result)
                    service.feed("web", result)
        for _ in range(3):
            health.feed("api", ProbeResult("http://127.0.0.1:9/", False, 0.0, error="refused"))
        await service.flush()
        yield StatusPage(health, history=service, order=["web", "api"]), service
        service.finish()


async def test_overview_one_layout_down_first_escaped(page: Any) -> None:
    status_page, _ = page
    status, ctype, body = await _get(status_page, "/status")
    assert (status, ctype) == (200, "text/html; charset=utf-8")
    rows = re.findall(
        r'<tr class="(\w+)" data-state="\w+" data-probe="(\w+)" data-target="([^"]*)"', body
    )
    # Down first (api's target, though api is second in config order), then web in order.
    assert [(s, p) for s, p, _ in rows] == [("down", "api"), ("up", "web"), ("up", "web")]
    assert body.count("<table") == 1  # one column layout for every probe
    assert "<script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "100.00%" in body  # GOOD's uptime over 24 h
    # HOSTILE: 5 of 30 minutes down = 150 - 30 = 150/180... 150 of 180 probes ok.
    assert f"{100 * 150 / 180:.2f}%" in body
    assert 'class="days"' in body
    # A URL wraps after its separators, never inside a port number.
    assert "18081/<wbr>" in body
    assert "1808<wbr>" not in body
    down = (await _get(status_page, "/status", "state=down"))[2]
    assert down.count('data-state="down"') == 1
    assert 'data-state="up"' not in down
    text = (await _get(status_page, "/status", "q=18082"))[2]
    assert len(re.findall(r"<tr class=", text)) == 1


async def test_detail_has_chart_incident_and_failures(page: Any) -> None:
    status_page, service = page
    # The outage made Health move HOSTILE down and up again: one incident, from its listener.
    await service.flush()
    status, _, body = await _get(status_page, f"/status/web/{quote(HOSTILE, safe='')}")
    assert status == 200
    assert "<script>" not in body
    assert "&lt;b&gt;bold&lt;/b&gt;" in body
    points = re.search(r'<polyline class="q1"[^>]*points="([^"]*)"', body)
    assert points is not None
    assert len(points.group(1).split()) >= 2
    assert body.count('<tr class="incident">') == 1
    assert "5 of 6" not in body  # failures are per minute: 6 of 6 failed
    assert "6 of 6" in body
    missing = await _get(status_page, "/status/web/nope")
    assert missing[0] == 404


async def test_api_and_badges(page: Any) -> None:
    status_page, service = page
    status, ctype, body = await _get(status_page, "/api/v1/targets")
    assert (status, ctype) == (200, "application/json")
    rows = {r["target"]: r for r in json.loads(body)["targets"]}
    assert rows[GOOD]["uptime"]["24h"] == 1.0
    assert rows[HOSTILE]["uptime"]["24h"] == pytest.approx(150 / 180)
    assert rows[HOSTILE]["slo"]["burn_rate"]["1h"] == pytest.approx((30 / 180) / 0.01)
    assert "slo" not in rows["http://127.0.0.1:9/"]
    path = f"/api/v1/targets/web/{quote(HOSTILE, safe='')}/history"
    now = service.wall()
    status, _, body = await _get(status_page, path, f"from={now - 3600}&to={now}&step=300")
    doc = json.loads(body)
    assert status == 200
    assert sum(p["probes"] for p in doc["points"]) == 180
    assert sum(p["successes"] for p in doc["points"]) == 150
    assert all(p["latency_p99"] is None or p["latency_p99"] < 0.01 for p in doc["points"])
    bad = await _get(status_page, path, "from=yesterday")
    assert bad[0] == 400
    assert "from, to and step are seconds" in json.loads(bad[2])["error"]
    assert (await _get(status_page, "/api/v1/incidents"))[0] == 200
    status, ctype, svg = await _get(
        status_page, f"/badge/web/{quote(GOOD, safe='')}/uptime-24h.svg"
    )
    assert (status, ctype) == (200, "image/svg+xml")
    assert ">100.00%<" in svg
    assert "#4c1" in svg
    state = (await _get(status_page, "/badge/api/http%3A%2F%2F127.0.0.1%3A9%2F/status.svg"))[2]
    assert ">down<" in state
    p99 = (await _get(status_page, f"/badge/web/{quote(GOOD, safe='')}/p99-24h.svg"))[2]
    assert " ms<" in p99


async def test_slo_metrics_and_burn_rate_condition(page: Any) -> None:
    _, service = page
    ems = slo_metrics(service.summary, {p.name: p for p in PROBES})
    names = {(name, em.labels.get("window", "")) for em in ems for name in em.metrics}
    assert ("slo_error_budget_remaining_ratio", "") in names
    assert ("slo_burn_rate", "1h") in names
    assert ("slo_burn_rate", "6h") in names
    assert all(em.labels["probe"] == "web" for em in ems)
    rule = AlertRule("slo", failure_threshold=0, burn_rate_above=14.4)
    health = TargetHealth("web", HOSTILE, rule, 0.0)
    ok = ProbeResult(HOSTILE, True, 0.001)
    assert health.feed(ok) is None
    assert health.feed(ok) is not None  # up
    health.burn_rates = {"1h": 16.7}
    assert health.feed(ok).new == "down"  # type: ignore[union-attr]
    assert health.feed(ok) is None  # still burning: stays down however many successes
    health.burn_rates = {"1h": 2.0}
    assert health.feed(ok).new == "up"  # type: ignore[union-attr]


async def test_api_lists_every_target_past_a_page(tmp_path: Path) -> None:
    from trioprobe.statuspage.overview import PAGE_SIZE

    health = Health()
    for i in range(PAGE_SIZE + 7):
        health.feed("web", ProbeResult(f"t{i}", True, 0.001))
    page = StatusPage(health)
    body = json.loads((await _get(page, "/api/v1/targets"))[2])
    assert len(body["targets"]) == PAGE_SIZE + 7
    html_page = (await _get(page, "/status"))[2]
    assert html_page.count("<tr class=") == PAGE_SIZE
    assert 'href="/status?page=2"' in html_page
