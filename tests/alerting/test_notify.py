"""Notifications with a real command (real clock: a child process is real time), and the
config checks of ``[[alert]]`` tables."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import attrs
import pytest
import trio

from trioprobe.alerting import DOWN, UP, CommandNotifier, Notice, Transition
from trioprobe.alerting.notice import notice_from_document
from trioprobe.alerting.notify import log_notice
from trioprobe.config import ConfigError, parse_config
from trioprobe.runner import Runner

from . import scripted_probe
from .scripted_probe import fast_config

SCRIPT = """\
import json, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(sys.argv[2:]) + "\\n")
"""


def _script(tmp_path: Path) -> Path:
    script = tmp_path / "record_args.py"
    script.write_text(SCRIPT)
    return script


def _transition(target: str = "t<1>; rm -rf /") -> Transition:
    return Transition("p", target, UP, DOWN, 1700000000.0, 3, 5, "refused", alert="a")


async def test_command_gets_templated_arguments_without_a_shell(tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    argv = (sys.executable, str(_script(tmp_path)), str(out))
    notifier = CommandNotifier(
        (*argv, "{event}", "{alert}", "{target}", "{failures}/{total}", "{since}", "{json}"), 10.0
    )
    notice = Notice("fire", _transition())
    with trio.fail_after(30):
        assert await notifier.notify(notice)
    (args,) = [json.loads(line) for line in out.read_text().splitlines()]
    # The target reaches the program as one argument, verbatim: no shell ever parses it.
    assert args[:5] == ["fire", "a", "t<1>; rm -rf /", "3/5", "2023-11-14T22:13:20+00:00"]
    assert json.loads(args[5])["key"] == notice.key


async def test_failing_and_hanging_commands_are_counted_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = CommandNotifier((str(tmp_path / "no-such-program"),), 10.0)
    failing = CommandNotifier((sys.executable, "-c", "import sys; sys.exit('nope')"), 10.0)
    hanging = CommandNotifier((sys.executable, "-c", "import time; time.sleep(60)"), 0.5)
    with trio.fail_after(30):
        for notifier in (missing, failing, hanging):
            assert not await notifier.notify(Notice("fire", _transition()))
            assert notifier.failed == 1
    text = caplog.text
    assert "could not start" in text
    assert "exited with 1: nope" in text
    assert "killed (with its process group) after its timeout of 0.5 s" in text


async def test_runner_runs_the_command_on_fire_and_resolve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "calls.jsonl"
    config = parse_config(
        fast_config(
            {
                "name": "x-down",
                "command": [
                    sys.executable,
                    str(_script(tmp_path)),
                    str(out),
                    "{event}",
                    "{target}",
                    "{state}",
                    "{failure}",
                ],
            }
        )
    )
    runner = Runner(config)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            await runner.health.wait_until("x", UP)
            scripted_probe.OUTCOMES["x"] = False
            await runner.health.wait_until("x", DOWN)
            scripted_probe.OUTCOMES["x"] = True
            await runner.health.wait_until("x", UP)
            runner.shutdown()  # the notifiers drain before the run ends
    calls = [json.loads(line) for line in out.read_text().splitlines()]
    # The failure's reason reaches the command (on resolve: the last one, for the record).
    assert calls == [["fire", "x", "down", "http_status"], ["resolve", "x", "up", "http_status"]]


def test_log_and_webhook_notices_carry_the_failure_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = attrs.evolve(_transition("web"), failure="tls_expired")
    notice = Notice("fire", t)
    with caplog.at_level(logging.WARNING, "trioprobe.alerting"):
        log_notice(notice)
    assert "is down (3 of last 5 failed): tls_expired: refused" in caplog.text
    doc = notice.document()
    assert (doc["failure"], doc["failure_reason"]) == ("tls_expired", "tls_expired")
    assert notice.fields()["failure"] == "tls_expired"
    # Read back from the durable queue: the reason survives a restart.
    assert notice_from_document(json.loads(notice.to_json())) == notice


@pytest.mark.parametrize(
    ("alert", "message"),
    [
        ({"probes": ["nope"]}, "alert[0].probes: no probe named 'nope'"),
        ({"failures": 4, "total": 3}, "expected 0 <= failures <= total"),
        ({"failure_threshold": 0}, "no down condition"),
        ({"max_latency": -1.0}, "alert[0].max_latency: expected a finite number"),
        ({"command": ["echo", "{host}"]}, "unknown field {host}"),
        ({"command": ["echo", "{target"]}, "bad template"),
        ({"webhook": "ftp://x"}, "alert[0].webhook: expected an http:// or https:// URL"),
        ({"colour": "red"}, "unknown key"),
    ],
)
def test_alert_config_errors_name_the_key(alert: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "probe": [{"name": "p", "type": "http", "targets": ["http://127.0.0.1:9/"]}],
                "alert": [{"name": "a", **alert}],
            }
        )
    assert message in str(info.value)


def test_two_alerts_cannot_claim_one_probe() -> None:
    with pytest.raises(ConfigError, match="probe 'p' already has alert 'a'"):
        parse_config(
            {
                "probe": [{"name": "p", "type": "http", "targets": ["http://127.0.0.1:9/"]}],
                "alert": [{"name": "a", "probes": ["p"]}, {"name": "b", "probes": ["p"]}],
            }
        )


def test_webhook_queue_dir_is_relative_to_the_config(tmp_path: Path) -> None:
    config = parse_config(
        {
            "probe": [{"name": "p", "type": "http", "targets": ["http://127.0.0.1:9/"]}],
            "alert": [{"name": "a", "webhook": "http://127.0.0.1:1/", "webhook_queue_dir": "q"}],
            "status": {"port": 0},
        },
        base_dir=tmp_path,
    )
    assert config.alerts[0].webhook_queue_dir == os.path.join(tmp_path, "q")
    assert config.status is not None
    assert config.status.host == "127.0.0.1"


HANG = "import os, sys, time; open(sys.argv[1], 'a').write(str(os.getpid())); time.sleep(600)"


async def test_a_hanging_command_never_stalls_probing(tmp_path: Path) -> None:
    """The command hangs far longer than the test; state changes go on regardless, and the
    shutdown is bounded by shutdown_grace (the hung command is killed).

    What is asserted cannot depend on the machine's load: the state changes happen while the
    command hangs; the shutdown waits the grace (at least 0.5 s) and then returns without
    waiting for the command (which would take 600 s: the hang guard is 30 s); and the command's
    process is gone (killed and reaped) when the runner returns.
    """
    pid_file = tmp_path / "pid"
    config = parse_config(
        fast_config(
            {
                "name": "x-down",
                "command": [sys.executable, "-c", HANG, str(pid_file)],
                "command_timeout": 600.0,
            },
            shutdown_grace=0.5,
        )
    )
    runner = Runner(config)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            for _ in range(3):  # fire, resolve, fire... while the first command still hangs
                scripted_probe.OUTCOMES["x"] = False
                await runner.health.wait_until("x", DOWN)
                scripted_probe.OUTCOMES["x"] = True
                await runner.health.wait_until("x", UP)
            while not pid_file.exists() or not pid_file.read_text():  # noqa: ASYNC110
                await trio.sleep(0.01)  # the command started (it runs in real time)
            pid = int(pid_file.read_text())
            os.kill(pid, 0)  # alive: it hangs while the states changed
            stopped_at = trio.current_time()
            runner.shutdown()
        took = trio.current_time() - stopped_at
    # The notifier was given its grace, and not the command's 600 s: the fail_after(30) above
    # is what bounds the other side.
    assert took >= 0.5
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not left running


def test_an_alert_1024_notices_behind_drops_the_next_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Probing never waits for notifications: once an alert's inbox (NOTICE_BUFFER notices) is
    full, the next notice is dropped, counted and logged, and the buffered ones stay."""
    from trioprobe.alerting._notifiers import AlertNotifiers
    from trioprobe.alerting.notify import NOTICE_BUFFER

    config = parse_config(
        fast_config({"name": "x-down", "command": [sys.executable, "-c", "pass"], "log": False})
    )
    alert = AlertNotifiers(config.alerts[0], 1.0)
    notices = [
        Notice("fire", Transition("p", f"t{i}", UP, DOWN, float(i), 3, 5, "x", alert="x-down"))
        for i in range(NOTICE_BUFFER + 2)
    ]
    assert NOTICE_BUFFER == 1024
    for notice in notices[:NOTICE_BUFFER]:
        alert.notify(notice)
    assert alert.dropped == 0
    alert.notify(notices[NOTICE_BUFFER])
    assert alert.dropped == 1
    assert "'x-down' is 1024 notices behind: dropped a fire of 't1024'" in caplog.text
    # What was buffered is still there, in order; a free slot takes the next notice again.
    inbox = alert._inbox_out
    assert inbox.receive_nowait() is notices[0]
    alert.notify(notices[NOTICE_BUFFER + 1])
    assert alert.dropped == 1
    kept = [inbox.receive_nowait() for _ in range(NOTICE_BUFFER)]
    assert kept == [*notices[1:NOTICE_BUFFER], notices[NOTICE_BUFFER + 1]]
