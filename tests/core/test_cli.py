"""The ``trioprobe`` command: check, run and demo (real time, real loopback sockets)."""

from __future__ import annotations

import ast
import contextlib
import http.server
import io
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from rich.live import Live

import trioprobe
from trioprobe.cli import _run, main
from trioprobe.cli._live import LiveStats
from trioprobe.config import load_config
from trioprobe.metrics import EventMetrics
from trioprobe.results import ProbeResult

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
        ('[[probe]]\nname = "w"\ntype = "http"\ntargets = ["x"]\nintervall = 1\n', "intervall"),
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
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon", "1e300"])
def test_display_flags_must_be_positive_seconds(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", flag, value]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"trioprobe: error: argument {flag}: expected a finite number")


# Every numeric flag of every command, with a value each once took as valid (or crashed on).
@pytest.mark.parametrize(
    "argv",
    [
        ["logping", "memory", "--interval", "nan"],
        ["logping", "memory", "--duration", "nan"],
        ["logping", "memory", "--report", "nan"],
        ["logping", "memory", "--disconnect-every", "-1"],
        ["serve", "health", "--duration", "nan"],
        ["serve", "health", "--port", "65536"],
        ["serve", "zmq", "--uptime", "nan"],
        ["send", "tcp://127.0.0.1:1", "x", "--timeout", "nan"],
        ["send", "tcp://127.0.0.1:1", "x", "--retries", "0"],
        ["bench", "tcp://127.0.0.1:1", "--duration", "nan"],
        ["bench", "tcp://127.0.0.1:1", "--timeout", "inf"],
        ["bench", "tcp://127.0.0.1:1", "--clients", "0"],
        ["bench", "tcp://127.0.0.1:1", "--message-size", "-5"],
        ["run", "x.toml", "--duration", "-inf"],
    ],
)
def test_numeric_flags_are_range_checked(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    flag = next(arg for arg in argv if arg.startswith("--"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    [line] = err.splitlines()
    assert line.startswith(f"trioprobe: error: argument {flag}: expected ")
    assert "Traceback" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"trioprobe {trioprobe.__version__}\n"


def test_usage_mistakes_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("trioprobe: error: argument COMMAND: invalid choice: 'frobnicate'")
    assert line.endswith("(see `trioprobe --help`)")


ROOT = Path(__file__).resolve().parents[2]

STEADY = """
[[probe]]
name = "web"
type = "http"
targets = ["{url}"]
interval = 0.1
timeout = 10.0
stats_interval = 0.5
"""


def test_quiet_prints_only_changes(
    tmp_path: Path, http_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # It used to reprint every target at every refresh; a steady target now prints once, when
    # it is first seen ok, and once more in the summary at exit.
    path = _write(tmp_path, STEADY.format(url=http_url))
    assert main(["run", str(path), "--duration", "1.5", "--quiet", "--refresh", "0.1"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if http_url in line]
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"ok: web {http_url} total=")
    assert lines[1].startswith(f"web {http_url} total=")


def test_live_stats_changes() -> None:
    live = LiveStats()
    assert live.changes() == []
    live.observe("p", ProbeResult("a", True, 0.001))
    [line] = live.changes()
    assert line.startswith("ok: p a total=1 ")
    live.observe("p", ProbeResult("a", True, 0.001))
    assert live.changes() == []  # still ok
    assert live.changes() == []  # nothing new
    live.observe("p", ProbeResult("a", False, error="refused"))
    [line] = live.changes()
    assert line.startswith("FAILING: p a total=3 ")
    assert "last_error='refused'" in line
    live.observe("p", ProbeResult("a", False, error="refused"))
    assert live.changes() == []  # the same failure
    live.observe("p", ProbeResult("a", False, error="timed out"))
    [line] = live.changes()
    assert "last_error='timed out'" in line
    live.observe("p", ProbeResult("a", True, 0.001))
    [line] = live.changes()
    assert line.startswith("ok: p a total=6 ")


def test_lines_on_stdout_takes_the_terminal_from_the_live_table(
    tmp_path: Path,
    http_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Both used to write to the terminal, the table tearing through the surfacer's lines.
    terminal = io.StringIO()
    monkeypatch.setattr(_run, "Console", lambda: Console(file=terminal, force_terminal=True))
    tables: list[object] = []
    monkeypatch.setattr(_run, "Live", lambda *a, **k: tables.append(a) or Live(*a, **k))
    text = STEADY.format(url=http_url) + '[[surfacer]]\ntype = "lines"\npath = "-"\n'
    assert main(["run", str(_write(tmp_path, text)), "--duration", "1", "--refresh", "0.1"]) == 0
    assert tables == []
    captured = capsys.readouterr()
    assert "the lines surfacer writes to standard output, so no live display" in captured.err
    # The surfacer had stdout to itself; the summary came at exit, as lines.
    assert f"trioprobe web dst={http_url}".split()[0] in captured.out
    assert captured.out.splitlines()[-1].startswith(f"web {http_url} total=")


def test_live_table_when_stdout_is_free(
    tmp_path: Path,
    http_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The positive control of the test above: with the lines in a file, the table is shown.
    terminal = io.StringIO()
    monkeypatch.setattr(_run, "Console", lambda: Console(file=terminal, force_terminal=True))
    tables: list[object] = []
    monkeypatch.setattr(_run, "Live", lambda *a, **k: tables.append(a) or Live(*a, **k))
    text = STEADY.format(url=http_url) + '[[surfacer]]\ntype = "lines"\npath = "out.txt"\n'
    assert main(["run", str(_write(tmp_path, text)), "--duration", "1", "--refresh", "0.1"]) == 0
    assert len(tables) == 1
    assert "no live display" not in capsys.readouterr().err
    assert "trioprobe: final" in terminal.getvalue()


def test_prometheus_port_in_use_names_the_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = STEADY.format(url="http://127.0.0.1:9/")
        text += f'[[surfacer]]\ntype = "prometheus"\nport = {port}\n'
        assert main(["run", str(_write(tmp_path, text)), "--duration", "1", "--quiet"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("trioprobe: error: surfacer 'prometheus' could not start: ")
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line


def test_missing_targets_file_names_config_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, '[[probe]]\nname = "w"\ntype = "http"\ntargets_file = "t.txt"\n')
    for command in ("check", "run"):
        assert main([command, str(path)]) == 2
        [line] = capsys.readouterr().err.splitlines()
        assert line == (
            f"trioprobe: error: {path}: probe[0].targets_file: cannot read {tmp_path / 't.txt'}: "
            "No such file or directory"
        )


def test_readme_library_snippet_runs_its_main() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## As a library", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    tree = ast.parse(snippet)
    assert any(isinstance(n, ast.AsyncFunctionDef) and n.name == "main" for n in tree.body)
    # It used to define main() and never run it.
    calls = [ast.unparse(n.value) for n in tree.body if isinstance(n, ast.Expr)]
    assert "trio.run(main)" in calls


def test_example_config_works_with_its_ports_taken(
    tmp_path: Path, http_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The example used fixed ports (8080 to probe, 9313 to serve): now the only port to choose is
    # the probed one, in targets.txt, which both probes read; Prometheus takes any free port.
    shipped = load_config(ROOT / "examples" / "config.toml")
    assert all(spec.targets_file == "targets.txt" for spec, _ in shipped.probes)
    assert [o.port for s, o in shipped.surfacers if s.type == "prometheus"] == [0]
    example = (ROOT / "examples" / "config.toml").read_text()
    config = tmp_path / "config.toml"
    config.write_text(example.replace('path = "-"', 'path = "out.txt"'))
    (tmp_path / "targets.txt").write_text(http_url + "\n")
    with contextlib.ExitStack() as stack:
        for port in (8080, 9313):  # taken, by us if nobody else has them
            taken = stack.enter_context(socket.socket())
            with contextlib.suppress(OSError):
                taken.bind(("127.0.0.1", port))
                taken.listen()
        assert main(["run", str(config), "--duration", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"prometheus serving at http://127\.0\.0\.1:\d+", out), out
