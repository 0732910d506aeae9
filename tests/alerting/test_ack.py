"""Acknowledge (issue 21 item 5): ``POST /api/v1/alerts/{id}/ack`` stops a firing alert's
repeats until it resolves; writes need the bearer token when one is configured (or a loopback
bind); the token never shows in any output. The ASGI app is called in-process, under the mock
clock."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from trioprobe.alerting import DOWN, UP
from trioprobe.alerting.api import AlertsAPI
from trioprobe.cli import main
from trioprobe.config import parse_config
from trioprobe.runner import Runner, StartupError

from . import scripted_probe

TOKEN = "s3cr3t-token-0123456789abcdef"


def _config(**status: Any) -> Any:
    return parse_config(
        {
            "shutdown_grace": 1.0,
            "probe": [
                {"name": "p", "type": "scripted", "targets": ["a"], "interval": 1.0, "timeout": 0.5}
            ],
            "alert": [{"name": "p-down", "repeat_interval": 10.0}],
            "status": {"host": "127.0.0.1", "port": 0, **status},
        }
    )


async def _call(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers or []}
    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


def _repeats(caplog: pytest.LogCaptureFixture) -> int:
    return sum("alert 'p-down' repeat" in r.getMessage() for r in caplog.records)


async def test_ack_stops_repeats_until_resolved(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trioprobe.alerting")
    runner = Runner(_config())
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        api = runner.alerting.api
        assert api is not None
        await runner.health.wait_until("a", UP)
        scripted_probe.OUTCOMES["a"] = False
        await runner.health.wait_until("a", DOWN)
        await trio.sleep(15)
        assert _repeats(caplog) == 1
        status, body = await _call(api, "GET", "/api/v1/alerts")
        (alert,) = json.loads(body)["firing"]
        assert (status, alert["target"], alert["acknowledged"]) == (200, "a", False)
        assert (await _call(api, "POST", "/api/v1/alerts/nope/ack"))[0] == 404
        status, _ = await _call(api, "POST", f"/api/v1/alerts/{alert['id']}/ack")
        assert status == 200  # loopback, no token configured: open
        await trio.sleep(40)
        assert _repeats(caplog) == 1  # no repeats once acknowledged
        # Resolved, then down again: a new alert, repeated again.
        scripted_probe.OUTCOMES["a"] = True
        await runner.health.wait_until("a", UP)
        scripted_probe.OUTCOMES["a"] = False
        await runner.health.wait_until("a", DOWN)
        await trio.sleep(15)
        assert _repeats(caplog) == 2
        runner.shutdown()


async def test_ack_needs_the_token_which_never_shows(
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TRIOPROBE_TEST_TOKEN", TOKEN)
    runner = Runner(_config(token_env="TRIOPROBE_TEST_TOKEN"))
    outputs = []
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        api = runner.alerting.api
        assert api is not None
        scripted_probe.OUTCOMES["a"] = False
        await runner.health.wait_until("a", DOWN)
        await trio.sleep(1)
        status, body = await _call(api, "GET", "/api/v1/alerts")  # reads stay open
        outputs.append(body)
        key = json.loads(body)["firing"][0]["id"]
        path = f"/api/v1/alerts/{key}/ack"
        for headers, expected in [
            ([], 401),
            ([(b"authorization", b"Bearer wrong")], 401),
            ([(b"authorization", TOKEN.encode())], 401),  # not a bearer header
            ([(b"authorization", b"Bearer " + TOKEN.encode())], 200),
        ]:
            status, body = await _call(api, "POST", path, headers)
            outputs.append(body)
            assert status == expected, body
        for page in ("/status", "/status.json", "/api/v1/alerts"):
            outputs.append((await _call(api, "GET", page))[1])
        runner.shutdown()
    assert all(TOKEN.encode() not in out for out in outputs)
    assert TOKEN not in caplog.text


async def test_writes_off_loopback_need_a_token() -> None:
    class Service:
        def acknowledge(self, key: str) -> bool:
            raise AssertionError("must not be reached")

    async def page(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not the page")

    api = AlertsAPI(Service(), page, token=None, loopback=False)  # type: ignore[arg-type]
    status, body = await _call(api, "POST", "/api/v1/alerts/abc/ack")
    assert status == 403
    assert b"token_env or token_file" in body


def test_check_never_prints_the_token(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "c.toml").write_text(
        '[[probe]]\nname = "p"\ntype = "tcp"\ntargets = ["127.0.0.1:1"]\n'
        '[status]\ntoken_file = "token"\n'
    )
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["check", str(tmp_path / "c.toml")]) == 0
    assert TOKEN not in out.getvalue() + err.getvalue()


async def test_a_configured_but_missing_token_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRIOPROBE_TEST_TOKEN", raising=False)
    runner = Runner(_config(token_env="TRIOPROBE_TEST_TOKEN"))
    with pytest.RaisesGroup(
        pytest.RaisesExc(StartupError, match="TRIOPROBE_TEST_TOKEN is not set"),
        flatten_subgroups=True,
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
