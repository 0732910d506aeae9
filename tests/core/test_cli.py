"""The ``trioprobe`` command: check, run and demo (real time, real loopback sockets)."""

from __future__ import annotations

import ast
import contextlib
import gc
import http.server
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.live import Live

import trioprobe
from trioprobe.cli import _run, main
from trioprobe.cli._live import LiveStats
from trioprobe.config import load_config
from trioprobe.metrics import EventMetrics, Kind
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
    with _http_server() as url:
        yield url


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
    # How many probes fit in one second of wall time depends on the machine's load; what this
    # test proves is that the final line and the final export (below) agree on that number.
    assert total >= 1
    # The lines surfacer got the final export. (Its relative path is taken from the working
    # directory, unlike targets_file, which is relative to the config: see the report.)
    exports = [
        EventMetrics.from_json(json.loads(line))
        for line in (tmp_path / "out.jsonl").read_text().splitlines()
    ]
    exports = [em for em in exports if "alert" not in em.labels]  # not the health metrics
    assert exports
    last = [em for em in exports if em.kind is Kind.CUMULATIVE][-1]
    assert last.label("dst") == http_url
    assert last.metric("total").value == total  # type: ignore[union-attr]


def test_demo_quiet() -> None:
    """The demo's final report has a row per target that produced a result. Stopped (SIGINT)
    once the status page shows a result for each web target, not after a fixed 2 s, so a busy
    machine makes this slower, never wrong."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trioprobe.cli", "demo", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        status = ""
        deadline = time.monotonic() + 60  # hang guard
        while not status and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("status page at "):
                status = line.split()[-1]
        assert status, "the demo never printed its status page"
        while time.monotonic() < deadline:
            with urllib.request.urlopen(status + ".json", timeout=5) as resp:
                rows = json.load(resp)["targets"]
            seen = {
                r["target"].rsplit(":", 1)[1].split("/", 1)[1]
                for r in rows
                if r["probe"] == "web" and r["total"]
            }
            if {"", "slow", "flaky"} <= seen:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
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
    # A number out of range, or text that is no duration ("soon", "nan").
    assert line.startswith(f"trioprobe: error: argument {flag}: expected a ")


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
    # the alert state machine first calls it up, and once more in the summary at exit.
    path = _write(tmp_path, STEADY.format(url=http_url))
    assert main(["run", str(path), "--duration", "1.5", "--quiet", "--refresh", "0.1"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if http_url in line]
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"up: web {http_url} total=")
    assert "state=up" in lines[0]
    assert lines[1].startswith(f"web {http_url} total=")


def test_live_stats_changes_follow_the_alert_state_machine() -> None:
    # --quiet used to say FAILING after one failure while the alert went down after three: now
    # it reports the state machine's verdict (default rule: down after 3 failures, up after 2
    # successes), the same one as the table, the status page and the `up` metric.
    live = LiveStats()
    assert live.changes() == []
    live.observe("p", ProbeResult("a", True, 0.001))
    assert live.changes() == []  # unknown until a verdict
    live.observe("p", ProbeResult("a", True, 0.001))
    [line] = live.changes()
    assert line.startswith("up: p a total=2 ")
    assert "state=up" in line
    assert live.changes() == []  # nothing new
    for _ in range(2):
        live.observe("p", ProbeResult("a", False, error="refused"))
        assert live.changes() == []  # one or two failures: still up
    live.observe("p", ProbeResult("a", False, error="refused"))
    [line] = live.changes()
    assert line.startswith("DOWN: p a total=5 ")
    assert "last_error='refused'" in line
    live.observe("p", ProbeResult("a", False, error="refused"))
    assert live.changes() == []  # the same failure
    live.observe("p", ProbeResult("a", False, error="timed out"))
    [line] = live.changes()
    assert "last_error='timed out'" in line
    live.observe("p", ProbeResult("a", True, 0.001))
    assert live.changes() == []  # one success: still down
    live.observe("p", ProbeResult("a", True, 0.001))
    [line] = live.changes()
    assert line.startswith("up: p a total=9 ")
    # Recovered: the error is past, not current.
    assert "last_error" not in line
    assert "last_failure='just now'" in line


def _run_with_lines_surfacer(
    tmp_path: Path, url: str, lines_path: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[object], io.StringIO]:
    """``trioprobe run`` for 1 s with a ``lines`` surfacer writing to ``lines_path``; returns the
    live tables it opened and what it wrote to the terminal."""
    terminal = io.StringIO()
    monkeypatch.setattr(_run, "Console", lambda: Console(file=terminal, force_terminal=True))
    tables: list[object] = []
    monkeypatch.setattr(_run, "Live", lambda *a, **k: tables.append(a) or Live(*a, **k))
    text = STEADY.format(url=url) + f'[[surfacer]]\ntype = "lines"\npath = "{lines_path}"\n'
    assert main(["run", str(_write(tmp_path, text)), "--duration", "1", "--refresh", "0.1"]) == 0
    return tables, terminal


def test_lines_on_stdout_takes_the_terminal_from_the_live_table(
    tmp_path: Path,
    http_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Both used to write to the terminal, the table tearing through the surfacer's lines.
    tables, _ = _run_with_lines_surfacer(tmp_path, http_url, "-", monkeypatch)
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
    tables, terminal = _run_with_lines_surfacer(tmp_path, http_url, "out.txt", monkeypatch)
    assert len(tables) == 1
    assert "no live display" not in capsys.readouterr().err
    assert "trioprobe: final" in terminal.getvalue()


def _socket_fds() -> set[tuple[str, str]]:
    """(fd, inode) of every open socket of this process."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the fd listdir itself used, closed meanwhile
        if target.startswith("socket:"):
            found.add((fd, target))
    return found


def test_prometheus_port_in_use_names_the_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bind failure is one line naming the address, and the path that reports it closes
    every socket it opened (no warning filter: a leaked socket fails this test when the GC
    below finds it, and the fd table is compared too)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = STEADY.format(url="http://127.0.0.1:9/")
        text += f'[[surfacer]]\ntype = "prometheus"\nport = {port}\n'
        config = _write(tmp_path, text)
        before = _socket_fds()
        assert main(["run", str(config), "--duration", "1", "--quiet"]) == 2
        gc.collect()
        assert _socket_fds() - before == set()
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("trioprobe: error: surfacer 'prometheus' could not start: ")
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_status_page_port_in_use_names_the_status_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No [[alert]] at all: the error must blame the status page, not "alerting".
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = STEADY.format(url="http://127.0.0.1:9/") + f"[status]\nport = {port}\n"
        assert main(["run", str(_write(tmp_path, text)), "--duration", "1", "--quiet"]) == 2
    gc.collect()
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("trioprobe: error: the status page could not start: "), line
    assert "Address already in use" in line
    assert "alerting" not in line


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
    calls = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert "trio.run(main)" in calls


def test_example_config_works_with_its_ports_taken(
    tmp_path: Path, http_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The example used fixed ports (8080 to probe, 9313 to serve): now the only port to choose is
    # the probed one, in targets.txt, which both probes read; Prometheus and the status page take
    # any free port.
    shipped = load_config(ROOT / "examples" / "config.toml")
    assert all(spec.targets_file == "targets.txt" for spec, _ in shipped.probes)
    assert [o.port for s, o in shipped.surfacers if s.type == "prometheus"] == [0]
    example = (ROOT / "examples" / "config.toml").read_text()
    config = tmp_path / "config.toml"
    config.write_text(example.replace('path = "-"', 'path = "out.txt"'))
    (tmp_path / "targets.txt").write_text(http_url + "\n")
    with contextlib.ExitStack() as stack:
        for port in (8080, 9313, 9314):  # taken, by us if nobody else has them
            taken = stack.enter_context(socket.socket())
            with contextlib.suppress(OSError):
                taken.bind(("127.0.0.1", port))
                taken.listen()
        assert main(["run", str(config), "--duration", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"prometheus serving at http://127\.0\.0\.1:\d+", out), out
    assert re.search(r"http://127\.0\.0\.1:\d+/status", out), out


# The fuzz test of issue 12 (item 4): over the config schema, with numbers that are sane, absurd,
# non-finite or of the wrong type, `check` either accepts the config, which then runs for a second
# without error, or prints one line per problem (each naming the file) and exits 2; never a
# traceback. Sane values are bounded where a valid value would make the run itself long (a
# shutdown grace of a year is valid, and waits a year).

_BAD = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -1, -0.5, 0, 1e300, 2**63 - 1, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.sampled_from(["1", "", True, False, [1.0], {"a": 1}]),
)


def _sane(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, exclude_min=low == 0)


def _number(low: float, high: float) -> st.SearchStrategy[object]:
    return st.one_of(_sane(low, high), _sane(low, high), _BAD)


def _count(low: int, high: int) -> st.SearchStrategy[object]:
    return st.one_of(st.integers(low, high), st.integers(low, high), _BAD)


def _table(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {k: v if isinstance(v, st.SearchStrategy) else st.just(v) for k, v in required.items()},
        optional=optional,
    )


def _configs(url: str, workdir: str) -> st.SearchStrategy[dict[str, Any]]:
    timing = {"interval": _number(0, 1e7), "timeout": _number(0, 1e7)}
    buckets = st.one_of(
        _table(
            {}, {"base": _number(1.01, 1e6), "scale": _number(0, 1e6), "count": _count(1, 1000)}
        ),
        _table({"bounds": st.lists(_number(0, 1e9), max_size=5)}, {}),
    )
    http_probe = _table(
        {"name": "web", "type": "http", "targets": [url]},
        {
            **timing,
            "stats_interval": _number(0, 1e7),
            "latency_buckets": buckets,
            "expected_codes": st.lists(_count(100, 599), max_size=3),
        },
    )
    logping_probe = _table(
        {"name": "log", "type": "logping", "targets": ["memory"]},
        {
            "ping_interval": _number(0.01, 1e7),
            "pings_until_disconnect": _count(0, 10**6),
            "buffer": _count(1, 10**6),
            "replay_retry_interval": _number(0.01, 1e7),
        },
    )
    surfacers = [
        _table(
            {"type": "prometheus", "port": 0},
            {"expiry": _number(0, 1e7), "buffer": _count(1, 10**6)},
        ),
        _table({"type": "lines", "path": f"{workdir}/out.txt"}, {"buffer": _count(1, 10**6)}),
        _table(
            {"type": "influxdb", "url": "http://127.0.0.1:9", "queue_dir": f"{workdir}/queue"},
            {
                key: _number(0, 1e7)
                for key in ("batch_interval", "max_age", "purge_interval", "request_timeout")
            }
            | {"drain_timeout": _number(0, 0.5), "batch_size": _count(1, 10**6)},
        ),
    ]
    return _table(
        {
            "probe": st.lists(st.sampled_from([0, 1]), min_size=1, max_size=2, unique=True).flatmap(
                lambda kinds: st.tuples(*[(http_probe, logping_probe)[k] for k in kinds]).map(list)
            ),
            "surfacer": st.lists(st.sampled_from(surfacers), max_size=3).flatmap(
                lambda chosen: st.tuples(*chosen).map(list)
            ),
        },
        {"shutdown_grace": _number(0, 0.5)},
    )


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"


def _toml(config: dict[str, Any]) -> str:
    lines = (
        [f"shutdown_grace = {_toml_value(config['shutdown_grace'])}"]
        if ("shutdown_grace" in config)
        else []
    )
    for section in ("probe", "surfacer"):
        for table in config[section]:
            lines.append(f"[[{section}]]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


# Each accepted example runs for a second: bounded by the example count, not by a wall-clock guess.
@pytest.mark.timeout(600)
@given(data=st.data())
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_check_accepts_what_runs_and_rejects_in_one_line_per_problem(
    data: st.DataObject,
) -> None:
    with _http_server() as url, tempfile.TemporaryDirectory() as workdir:
        config = data.draw(_configs(url, workdir))
        path = Path(workdir) / "fuzz.toml"
        path.write_text(_toml(config))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["check", str(path)])
        assert "Traceback" not in err.getvalue()
        if status == 2:
            lines = err.getvalue().splitlines()
            assert lines
            # Every problem on a line of its own, each led by the prefix.
            prefix = f"trioprobe: error: {path}: "
            assert all(line.startswith(prefix) for line in lines), lines
            assert len(set(lines)) == len(lines), lines
            return
        assert status == 0, err.getvalue()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["run", str(path), "--duration", "1", "--quiet"])
        assert (status, "Traceback" not in err.getvalue()) == (0, True), err.getvalue()


@contextlib.contextmanager
def _http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
