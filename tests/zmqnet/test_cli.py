"""``trioprobe serve zmq`` (a subprocess), ``send`` and ``bench`` (in process) end to end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trioprobe.cli import main


def start_server(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "trioprobe.cli", "serve", "zmq", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving zmq" not in line:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"server did not start: {line!r} {out!r} {err!r}")
    return proc, line.rsplit(" on ", 1)[1].strip()


def test_serve_send_bench_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = tmp_path / "metrics.json"
    results = tmp_path / "results.json"
    proc, addr = start_server(
        "--addr", "tcp://127.0.0.1:0", "--workers", "4", "--name", "srv",
        "--metrics-out", str(metrics),
    )  # fmt: skip
    try:
        assert addr.startswith("tcp://127.0.0.1:")
        assert main(["send", addr, "hello", "world", "--identity", "cli"]) == 0
        replies = capsys.readouterr().out.splitlines()
        assert len(replies) == 2
        assert all(r.startswith("reply msg #1 from worker srv-") for r in replies)

        assert main(["bench", addr, "--duration", "0.5", "--clients", "2",
                     "--results", str(results)]) == 0  # fmt: skip
        out = capsys.readouterr().out
        assert "throughput (wall)" in out
        assert "latency p99.9" in out
        data = json.loads(results.read_text())
        assert data["messages"] > 0
        assert data["n_clients"] == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "accesses by" in out
    (line,) = metrics.read_text().splitlines()
    served = json.loads(line)
    assert served["server"] == "router"
    # The bench abandons its in-flight requests, which the server may still have answered.
    assert 2 + data["messages"] <= served["accesses"] <= 2 + data["messages"] + 2
    assert served["clients"] == 1 + 2


def test_sync_server_stops_after_uptime() -> None:
    proc, _ = start_server("--addr", "tcp://127.0.0.1:0", "--sync", "--uptime", "0.5")
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "0 accesses by 0 clients" in out


def test_send_to_a_dead_server_fails_with_a_clear_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["send", "tcp://127.0.0.1:1", "x", "--timeout", "0.2", "--retries", "2"])
    assert code == 1
    assert "message dropped after 2 attempt(s)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["send", "localhost", "x"], "needs a port"),
        (["send", "tcp://127.0.0.1:1", "x", "--retries", "0"], "--retries"),
        (["bench", "tcp://127.0.0.1:1", "--duration", "0"], "--duration"),
        (["serve", "zmq", "--workers", "-1"], "--workers"),
    ],
)
def test_user_mistakes_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_serve_on_a_bad_address_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "zmq", "--addr", "tcp://256.1.1.1:5", "--uptime", "1"]) == 2
    assert "cannot bind" in capsys.readouterr().err
