"""Alertmanager as a notifier (issue 21 item 2), against Debian's ``prometheus-alertmanager``
started on loopback: labels and annotations as sent, a silence made with ``amtool`` holds the
notification back, a recovery resolves (``endsAt``), and an Alertmanager stopped and restarted
mid-incident loses nothing. Real time; every wait is for a condition, bounded."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from trioprobe._asgi import Receive, Scope, Send, answer_lifespan, send_response, serve_asgi
from trioprobe.alerting import DOWN, UP, alertmanager
from trioprobe.config import parse_config
from trioprobe.probes import probe_types
from trioprobe.runner import Runner

from ..alerting import scripted_probe
from .services import Alertmanager, require_binary

pytestmark = pytest.mark.real


class Receiver:
    """Alertmanager's webhook receiver: every notification it was sent."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.notifications.append(json.loads(body))
        await send_response(send, 200, b"ok")

    def alerts(self, dst: str, status: str) -> list[dict[str, Any]]:
        return [
            a
            for n in self.notifications
            for a in n["alerts"]
            if a["labels"].get("dst") == dst and a["status"] == status
        ]


def _api_alerts(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


async def _until(what: str, check: Callable[[], object], limit: float = 30.0) -> Any:
    """Poll ``check`` (in a thread: it may call Alertmanager) until it returns something true."""
    with trio.move_on_after(limit):
        while not (value := await trio.to_thread.run_sync(check)):  # noqa: ASYNC110
            await trio.sleep(0.1)
        return value
    raise AssertionError(f"timed out waiting for {what}")


def _alert_for(url: str, dst: str) -> dict[str, Any] | None:
    return next((a for a in _api_alerts(url) if a["labels"].get("dst") == dst), None)


async def test_alertmanager_labels_silence_resolve_and_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = require_binary("prometheus-alertmanager", "prometheus-alertmanager")
    amtool = require_binary("amtool", "prometheus-alertmanager")
    monkeypatch.setattr(alertmanager, "RESEND_INTERVAL", 1.0)
    monkeypatch.setattr(alertmanager, "RETRY_MAX_INTERVAL", 0.5)
    receiver = Receiver()
    scripted_probe.OUTCOMES.update({"x": True, "y": True})
    with (
        probe_types.registered("scripted", "tests.alerting.scripted_probe"),
        trio.fail_after(120),
    ):
        async with trio.open_nursery() as nursery:
            hook = await nursery.start(serve_asgi, receiver.app)
            am = Alertmanager(binary, tmp_path, f"{hook}/am")
            await trio.to_thread.run_sync(am.start)
            try:
                await _scenario(am, amtool, receiver, tmp_path)
            finally:
                await trio.to_thread.run_sync(am.stop)
                scripted_probe.OUTCOMES.clear()
            nursery.cancel_scope.cancel()


async def _scenario(am: Alertmanager, amtool: str, receiver: Receiver, tmp_path: Path) -> None:
    config = parse_config(
        {
            "probe": [
                {
                    "name": "p",
                    "type": "scripted",
                    "targets": ["x", "y"],
                    "interval": 0.02,
                    "timeout": 0.5,
                    "labels": {"team": "web"},
                }
            ],
            "alert": [
                {
                    "name": "x-down",
                    "alertmanager": am.url,
                    "alertmanager_queue_dir": str(tmp_path / "amq"),
                    "severity": "page",
                    "repeat_interval": 0,
                }
            ],
            "status": {"port": 0},
            "shutdown_grace": 1.0,
        }
    )
    runner = Runner(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        health = runner.health
        await health.wait_until("x", UP)
        await health.wait_until("y", UP)
        silence = await trio.run_process(
            [
                amtool,
                f"--alertmanager.url={am.url}",
                "silence",
                "add",
                "alertname=x-down",
                "dst=y",
                "--duration=1h",
                "--comment=test",
                "--author=test",
            ],
            capture_stdout=True,
        )
        assert silence.stdout.strip()  # the silence's id

        # Down: both alerts reach Alertmanager; only x's is notified, y's is silenced.
        scripted_probe.OUTCOMES.update({"x": False, "y": False})
        await health.wait_until("x", DOWN)
        await health.wait_until("y", DOWN)
        x_alert = await _until("x in the API", lambda: _alert_for(am.url, "x"))
        y_alert = await _until("y in the API", lambda: _alert_for(am.url, "y"))
        assert x_alert["labels"] == {
            "alertname": "x-down",
            "probe": "p",
            "dst": "x",
            "severity": "page",
            "reason": "http_status",  # the failure's classified reason
            "team": "web",
        }
        assert x_alert["annotations"]["summary"] == "x is down (p)"
        assert "x is down (scripted)" in x_alert["annotations"]["description"]
        assert x_alert["generatorURL"].startswith(f"{runner.alerting.status_url}?probe=p&")
        assert x_alert["status"]["state"] == "active"
        assert y_alert["status"]["state"] == "suppressed"
        assert y_alert["status"]["silencedBy"]
        await _until("x's notification", lambda: receiver.alerts("x", "firing"))
        # Several group intervals (500 ms) go by: still nothing for the silenced y.
        await trio.sleep(2.0)
        assert receiver.alerts("y", "firing") == []

        # Alertmanager goes away mid-incident; meanwhile x recovers (its resolve waits on disk).
        await trio.to_thread.run_sync(am.stop)
        scripted_probe.OUTCOMES["x"] = True
        await health.wait_until("x", UP)
        await trio.sleep(1.0)  # retries fail while it is down
        await trio.to_thread.run_sync(am.start)  # it kept no alerts: y must be re-sent

        resolved = await _until("x resolved", lambda: receiver.alerts("x", "resolved"))
        assert resolved[-1]["endsAt"] > resolved[-1]["startsAt"]
        y_again = await _until("y back in the API", lambda: _alert_for(am.url, "y"))
        assert y_again["status"]["state"] == "suppressed"  # the silence survived too
        assert _alert_for(am.url, "x") is None  # resolved alerts leave the API
        assert receiver.alerts("y", "firing") == []
        runner.shutdown()
