"""The ``trioprobe`` command: check, run and demo (real time, real loopback sockets)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from trioprobe.cli import main
from trioprobe.metrics import EventMetrics

GOOD = """
[[probe]]
name = "web"
type = "http"
targets = ["{url}"]
interval = 0.2
timeout = 0.5
stats_interval = 0.4
latency_unit = "ms"

[[surfacer]]
type = "lines"
format = "json"
path = "out.jsonl"
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean


@pytest.fixture
def http_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "probe.toml"
    path.write_text(text)
    return path


def test_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, GOOD.format(url="http://127.0.0.1:1/"))
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: OK\n")
    assert "probe 'web' (http): 1 target(s), every 0.2s, timeout 0.5s, export every 0.4s" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[probe]]\nname = "w"\ntype = "http"\ntargets = ["http://x/"]\nintervall = 1\n',
            "intervall",
        ),
        ("[[probe]\n", "invalid TOML"),
    ],
)
def test_check_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = _write(tmp_path, text)
    assert main(["check", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith(f"trioprobe: error: {path}: ")
    assert expected in line
    assert "Traceback" not in captured.err


def test_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("trioprobe: error: ")
    assert "nope.toml: cannot read config" in line


def test_run_quiet(
    tmp_path: Path,
    http_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, GOOD.format(url=http_url))
    assert main(["run", str(path), "--duration", "1", "--quiet", "--refresh", "0.3"]) == 0
    out = capsys.readouterr().out
    final = [line for line in out.splitlines() if line.startswith(f"web {http_url} ")]
    assert final, out
    assert "success=100.0%" in final[-1]
    total = int(final[-1].split("total=")[1].split()[0])
    assert total >= 3
    # The lines surfacer got the final export. (Its relative path is taken from the working
    # directory, unlike targets_file, which is relative to the config: see the report.)
    exports = [
        EventMetrics.from_json(json.loads(line))
        for line in (tmp_path / "out.jsonl").read_text().splitlines()
    ]
    assert exports
    last = exports[-1]
    assert last.label("dst") == http_url
    assert last.metric("total").value == total  # type: ignore[union-attr]


def test_demo_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    for path in ("/", "/slow", "/flaky"):
        assert any(
            line.startswith("web http://127.0.0.1:") and f"{path} total=" in line
            for line in out.splitlines()
        ), out


def test_run_surfacer_that_cannot_start_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(
        tmp_path,
        '[[probe]]\nname = "w"\ntype = "http"\ntargets = ["http://127.0.0.1:9/"]\n'
        f'[[surfacer]]\ntype = "lines"\npath = "{tmp_path}/missing-dir/out.txt"\n',
    )
    assert main(["run", str(config), "--duration", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trioprobe: error: surfacer 'lines:")
    assert "could not start" in err
    assert "No such file or directory" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flag", ["--duration", "--refresh"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_display_flags_must_be_positive_seconds(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
