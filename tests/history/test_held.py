"""Blocked (a dependency down) and maintenance are kept apart from uptime (issue 21 items 3-4):
each result is counted once, as the live state had it when it was made; ``count_in_slo = true``
counts a window's results in uptime. The page and the API show the held states."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from trioprobe.alerting import DOWN, UP
from trioprobe.config import parse_config
from trioprobe.history import open_store
from trioprobe.probes import probe_types
from trioprobe.results import ProbeResult
from trioprobe.runner import Runner
from trioprobe.statuspage import StatusPage, render_html

from ..alerting import scripted_probe
from .test_pages import _get


@pytest.fixture(autouse=True)
def _scripted_type() -> Iterator[None]:
    scripted_probe.OUTCOMES.clear()
    with probe_types.registered("scripted", "tests.alerting.scripted_probe"):
        yield
    scripted_probe.OUTCOMES.clear()


def _config(tmp_path: Path, window: tuple[float, float], count_in_slo: bool) -> Any:
    def probe(name: str, target: str) -> dict[str, Any]:
        return {"name": name, "type": "scripted", "targets": [target], "interval": 1.0}

    iso = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) for t in window]
    return parse_config(
        {
            "shutdown_grace": 1.0,
            "history": {"path": str(tmp_path / "h.sqlite")},
            "probe": [probe("gw", "g"), probe("app", "a")],
            "alert": [
                {"name": "gw-down", "probes": ["gw"]},
                {"name": "app-down", "probes": ["app"], "depends_on": ["gw"]},
            ],
            "maintenance": [
                {"name": "m", "probes": ["app"], "start": iso[0], "end": iso[1]}
                | ({"count_in_slo": True} if count_in_slo else {})
            ],
        }
    )


async def _scenario(tmp_path: Path, count_in_slo: bool) -> tuple[list[str], list[Any], Any]:
    """gw and app up; gw down, app failing (blocked); both back; app failing in the window.
    Returns what each of app's results was by the live state, the page at the held moments,
    and the store's counts of app's target.

    The window is set by a reload once the run is there: under the mock clock, the start-up's
    threads (the store) let Trio's clock run ahead by a varying amount."""
    now = int(time.time()) + 1
    runner: Runner
    truth: list[str] = []
    window = [now + 10**6, now + 10**6]

    def observe(probe: str, result: ProbeResult) -> None:
        if probe != "app":
            return
        gw = runner.health.entry("gw", "g")
        wall = runner.alerting.wall_time()
        if gw is not None and gw.state == DOWN:
            truth.append("blocked")
        elif window[0] <= wall < window[1] and not count_in_slo:
            truth.append("maintenance")
        else:
            truth.append("ok" if result.success else "failed")

    runner = Runner(_config(tmp_path, (window[0], window[1] + 1), count_in_slo), on_result=observe)
    page = StatusPage(runner.health, history=runner.history, hold=runner.alerting.hold_reason)
    shown = []
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await runner.health.wait_until("a", UP)
        scripted_probe.OUTCOMES.update({"g": False, "a": False})
        await runner.health.wait_until("g", DOWN)
        await runner.health.wait_until("a", DOWN)
        await trio.sleep(10)
        shown.append(await _get(page, "/api/v1/targets", "probe=app"))
        shown.append(render_html(runner.health, hold=runner.alerting.hold_reason))
        scripted_probe.OUTCOMES.update({"g": True, "a": True})
        await runner.health.wait_until("g", UP)
        await runner.health.wait_until("a", UP)
        # A window from 5 s on, for 30 s (the reload applies it at once), failing in it.
        start = int(runner.alerting.wall_time()) + 5
        outcome = await runner.reload(_config(tmp_path, (start, start + 30), count_in_slo))
        assert outcome.ok, outcome.message
        window[:] = [start, start + 30]
        await trio.sleep(start + 5 - runner.alerting.wall_time())
        scripted_probe.OUTCOMES["a"] = False
        await trio.sleep(10)
        shown.append(await _get(page, "/api/v1/targets", "probe=app"))
        shown.append(render_html(runner.health, hold=runner.alerting.hold_reason))
        await trio.sleep(start + 40 - runner.alerting.wall_time())
        runner.shutdown()
    store = await trio.to_thread.run_sync(open_store, tmp_path / "h.sqlite")
    try:
        tid = store.targets()[("app", "a")][0]
        counts = store.counts(0, 1 << 40, store.watermarks())[tid]
    finally:
        store.close()
    return truth, shown, counts


async def test_blocked_and_maintenance_count_apart(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    truth, shown, counts = await _scenario(tmp_path, count_in_slo=False)
    assert truth.count("blocked") >= 10
    assert truth.count("maintenance") >= 10
    assert counts.blocked == truth.count("blocked")
    assert counts.maintenance == truth.count("maintenance")
    assert counts.probes == truth.count("ok") + truth.count("failed")
    assert counts.successes == truth.count("ok")
    # The failures while blocked and in maintenance are not in uptime: only app's own.
    assert counts.uptime == truth.count("ok") / (truth.count("ok") + truth.count("failed"))
    blocked_api, blocked_page, maint_api, maint_page = shown
    (row,) = json.loads(blocked_api[2])["targets"]
    assert (row["state"], row["health"]) == ("blocked", "down")
    assert 'data-state="blocked" data-probe="app"' in blocked_page
    assert '<td class="state">blocked</td>' in blocked_page
    (row,) = json.loads(maint_api[2])["targets"]
    assert (row["state"], row["health"]) == ("maintenance", "down")
    assert '<td class="state">maintenance</td>' in maint_page


async def test_count_in_slo_counts_the_window(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    truth, shown, counts = await _scenario(tmp_path, count_in_slo=True)
    assert "maintenance" not in truth
    assert counts.maintenance == 0
    assert counts.blocked == truth.count("blocked")
    assert counts.probes == truth.count("ok") + truth.count("failed")
    assert counts.successes == truth.count("ok")
    # The page still says maintenance (notifications are held); only the counting differs.
    assert '<td class="state">maintenance</td>' in shown[3]
