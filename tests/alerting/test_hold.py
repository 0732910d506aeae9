"""Dependencies and maintenance windows hold notifications (issue 21 items 3 and 4), in the
runner under the mock clock; and the cron recurrence of a window."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import trio

from trioprobe.alerting import DOWN, UP
from trioprobe.alerting.maintenance import Cron, Window
from trioprobe.config import ConfigError, parse_config
from trioprobe.runner import Runner
from trioprobe.specs import MaintenanceSpec

from . import scripted_probe


def _probe(name: str, target: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "scripted",
        "targets": [target],
        "interval": 1.0,
        "timeout": 0.5,
        **extra,
    }


def _config(**top: Any) -> Any:
    return parse_config(
        {
            "shutdown_grace": 1.0,
            "probe": [_probe("gw", "g"), _probe("app", "a", labels={"team": "web"})],
            "alert": [
                {"name": "gw-down", "probes": ["gw"], "repeat_interval": 0},
                {"name": "app-down", "probes": ["app"], "depends_on": ["gw"], "repeat_interval": 0},
            ],
            **top,
        }
    )


def _notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    """``alert event`` of every logged notice, in order."""
    out = []
    for r in caplog.records:
        message = r.getMessage()
        if r.name == "trioprobe.alerting" and message.startswith("alert '"):
            name, event = message.split("'")[1], message.split("'")[2].split(":")[0].strip()
            out.append(f"{name} {event}")
    return out


async def test_parent_down_then_child_down_is_one_notification(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trioprobe.alerting")
    runner = Runner(_config())
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await runner.health.wait_until("a", UP)
        scripted_probe.OUTCOMES["g"] = False
        await runner.health.wait_until("g", DOWN)
        scripted_probe.OUTCOMES["a"] = False
        await runner.health.wait_until("a", DOWN)
        await trio.sleep(30)
        assert _notices(caplog) == ["gw-down fire"]
        assert runner.alerting.held == {("app", "a"): "blocked"}
        # The parent recovers, the child is still down: it is evaluated afresh and fires.
        scripted_probe.OUTCOMES["g"] = True
        await runner.health.wait_until("g", UP)
        await trio.sleep(5)
        assert _notices(caplog) == ["gw-down fire", "gw-down resolve", "app-down fire"]
        assert runner.alerting.held == {}
        runner.shutdown()


async def test_a_blocked_child_that_recovers_first_sends_nothing(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trioprobe.alerting")
    runner = Runner(_config())
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await runner.health.wait_until("a", UP)
        scripted_probe.OUTCOMES.update({"g": False})
        await runner.health.wait_until("g", DOWN)
        scripted_probe.OUTCOMES["a"] = False
        await runner.health.wait_until("a", DOWN)
        scripted_probe.OUTCOMES["a"] = True
        await runner.health.wait_until("a", UP)
        scripted_probe.OUTCOMES["g"] = True
        await runner.health.wait_until("g", UP)
        await trio.sleep(5)
        runner.shutdown()
    assert _notices(caplog) == ["gw-down fire", "gw-down resolve"]


def _window(start: float, end: float, **scope: Any) -> dict[str, Any]:
    iso = {
        k: datetime.fromtimestamp(v, UTC).isoformat() for k, v in (("start", start), ("end", end))
    }
    return {"name": "upgrade", **iso, **scope}


async def test_maintenance_holds_then_releases_once(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trioprobe.alerting")
    now = time.time()
    # The service's wall clock follows the mock clock from its start: the window closes 60 s in.
    config = _config(maintenance=[_window(now - 10, now + 60, labels={"team": "web"})])
    runner = Runner(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await runner.health.wait_until("a", UP)
        # Down and back up inside the window: nothing at all.
        scripted_probe.OUTCOMES["a"] = False
        await runner.health.wait_until("a", DOWN)
        assert runner.alerting.held == {("app", "a"): "maintenance"}
        scripted_probe.OUTCOMES["a"] = True
        await runner.health.wait_until("a", UP)
        # Down again, and still down when the window ends: one notification.
        scripted_probe.OUTCOMES["a"] = False
        await runner.health.wait_until("a", DOWN)
        await trio.sleep(20)
        assert _notices(caplog) == []
        await trio.sleep(50)  # past the window's end
        assert _notices(caplog) == ["app-down fire"]
        runner.shutdown()


def test_cron_recurrence() -> None:
    cron = Cron.parse("30 2 * * 0")  # Sundays 02:30 UTC
    sunday = datetime(2026, 12, 6, 2, 30, tzinfo=UTC).timestamp()
    assert cron.matches(datetime(2026, 12, 6, 2, 30, tzinfo=UTC))
    assert not cron.matches(datetime(2026, 12, 7, 2, 30, tzinfo=UTC))
    window = Window(MaintenanceSpec("weekly", cron="30 2 * * 0", duration=3600, probes=("p",)))
    assert window.is_open(sunday + 1800)
    assert not window.is_open(sunday + 3600)
    assert not window.is_open(sunday - 60)
    assert window.covers("p", "x", {})
    assert not window.covers("q", "x", {})
    assert Cron.parse("*/15 8-17 * * 1-5").matches(datetime(2026, 12, 7, 9, 45, tzinfo=UTC))
    # Both day fields restricted: either matches (cron's rule).
    either = Cron.parse("0 0 1 * 1")
    assert either.matches(datetime(2026, 12, 7, 0, 0, tzinfo=UTC))  # a Monday
    assert either.matches(datetime(2026, 12, 1, 0, 0, tzinfo=UTC))  # the 1st


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"name": "m", "cron": "61 * * * *", "duration": 60}, r"maintenance\[0\]\.cron: .*0-59"),
        ({"name": "m", "start": "tomorrow", "end": "2026-01-01"}, r"start: expected an ISO"),
        ({"name": "m", "cron": "0 2 * * *"}, r"duration: expected > 0"),
        ({"name": "m"}, r"either start and end, or cron and duration"),
        ({"name": "m", "start": "2026-01-02", "end": "2026-01-01"}, r"end: must be after start"),
        ({"name": "m", "cron": "0 2 * * *", "duration": 60, "probes": ["nope"]}, r"'nope'"),
    ],
)
def test_maintenance_config_errors(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(maintenance=[table])


def test_depends_on_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"alert\[0\]\.depends_on: 'nope' names no probe"):
        parse_config(
            {
                "probe": [_probe("app", "a")],
                "alert": [{"name": "x", "probes": ["app"], "depends_on": ["nope"]}],
            }
        )
    with pytest.raises(ConfigError, match="a probe this alert watches"):
        parse_config(
            {
                "probe": [_probe("app", "a")],
                "alert": [{"name": "x", "probes": ["app"], "depends_on": ["app"]}],
            }
        )
    config = parse_config(
        {
            "probe": [_probe("gw", "10.0.0.1:80"), _probe("app", "a")],
            "alert": [{"name": "x", "probes": ["app"], "depends_on": ["gw:10.0.0.1:80"]}],
        }
    )
    assert config.alerts[0].depends_on == ("gw:10.0.0.1:80",)
