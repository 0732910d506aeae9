"""The CLI: `check` lists alerts and the status page, `run` prints the page's URL, and a bad
template is a one-line error (real time, loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trioprobe.cli import main

CONFIG = """\
[[probe]]
name = "web"
type = "http"
targets = ["http://127.0.0.1:9/"]
interval = 0.2
timeout = 0.1

[[alert]]
name = "web-down"
command = ["echo", "{target}"]

[status]
port = 0
"""


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def test_check_lists_alerts_and_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", _write(tmp_path, CONFIG)]) == 0
    out = capsys.readouterr().out
    assert "alert 'web-down' on every other probe: notifies by log, command" in out
    assert "status page on 127.0.0.1:0" in out


def test_bad_template_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", _write(tmp_path, CONFIG.replace("{target}", "{host}"))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trioprobe: error: ")
    assert "alert[0].command: unknown field {host}" in err
    assert len(err.strip().splitlines()) == 1


def test_run_prints_the_status_page_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", _write(tmp_path, CONFIG), "--duration", "1", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(
        line.startswith("status page at http://127.0.0.1:") and line.endswith("/status")
        for line in lines
    ), lines
