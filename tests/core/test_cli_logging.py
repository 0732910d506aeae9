"""Where `trioprobe run` sends its log lines: standard error, or --log-file, as text or JSON;
never onto the terminal behind the live table (issue 25 item 2)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from rich.console import Console

from trioprobe.cli import _run, main

# A closed port: every probe fails at once, so the alert fires after three.
DOWN = """
[[probe]]
name = "web"
type = "http"
targets = ["http://127.0.0.1:9/"]
interval = "50ms"
timeout = "2s"

[[alert]]
name = "web-down"
"""


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(DOWN)
    return path


def test_logs_go_to_stderr_not_the_terminal_under_the_live_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # stdout is a terminal (the live table), stderr is redirected (capsys: not a TTY). The fire
    # used to be drawn on the terminal through rich's stderr redirection, and `2> run.err`
    # stayed empty.
    terminal = io.StringIO()
    monkeypatch.setattr(_run, "Console", lambda: Console(file=terminal, force_terminal=True))
    argv = ["run", str(_config(tmp_path)), "--duration", "1", "--refresh", "100ms"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    fires = [line for line in err.splitlines() if "alert 'web-down' fire" in line]
    assert len(fires) == 1, err
    assert " WARNING trioprobe.alerting: " in fires[0]
    assert "alert 'web-down'" not in terminal.getvalue()
    # The handler is gone afterwards: main() leaves logging as it found it.
    assert not any(
        type(h).__name__ == "StderrHandler" for h in logging.getLogger("trioprobe").handlers
    )


def test_log_file_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "trioprobe.log"
    argv = ["run", str(_config(tmp_path)), "--duration", "1", "--quiet"]
    assert main([*argv, "--log-file", str(log), "--log-format", "json"]) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    fires = [r for r in records if "alert 'web-down' fire" in r["message"]]
    assert len(fires) == 1, records
    assert fires[0]["level"] == "WARNING"
    assert fires[0]["logger"] == "trioprobe.alerting"
    assert fires[0]["time"].endswith("+00:00")
    assert "alert 'web-down'" not in capsys.readouterr().err


def test_unwritable_log_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "no-such-dir" / "x.log"
    assert main(["run", str(_config(tmp_path)), "--log-file", str(bad)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("trioprobe: error: argument --log-file: cannot open ")
    assert "No such file or directory" in line
