"""``trioprobe serve zmq`` (a subprocess), ``send`` and ``bench`` (in process) end to end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from trioprobe.cli import main
from trioprobe.cli._zmqnet import DEFAULT_SERVE_ADDR
from trioprobe.zmqnet import shared_context


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


def test_send_answered_with_an_error_frame_fails_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The other ZmqNetError a send can end with (besides a drop): exit 1, the reason on stderr."""
    sock: zmq.Socket[bytes] = shared_context().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.bind("tcp://127.0.0.1:*")
    addr = sock.getsockopt(zmq.LAST_ENDPOINT).decode()  # type: ignore[union-attr]

    def answer_once() -> None:
        ident, empty, _ = sock.recv_multipart()
        sock.send_multipart([ident, empty, b"ERROR", b"ValueError: nope"])

    thread = threading.Thread(target=answer_once)
    thread.start()
    try:
        code = main(["send", addr, "x", "--timeout", "5", "--retries", "1"])
    finally:
        thread.join()
        sock.close()
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("trioprobe: server ")
    assert "ValueError: nope" in err


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


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single ``trioprobe: error:`` line a user mistake must produce (no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("trioprobe: error: ")
    return line


def test_serve_on_a_bad_address_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "zmq", "--addr", "tcp://256.1.1.1:5", "--uptime", "1"]) == 2
    line = one_error_line(capsys)
    assert "cannot bind" in line
    assert "tcp://256.1.1.1:5" in line


@pytest.mark.parametrize("addr", ["tcp://*:99999", "127.0.0.1:65536", "tcp://127.0.0.1:-1"])
def test_serve_refuses_a_port_libzmq_would_misread(
    addr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """libzmq binds tcp://*:99999 to some random port without a word."""
    assert main(["serve", "zmq", "--addr", addr, "--uptime", "1"]) == 2
    line = one_error_line(capsys)
    assert "from 0 to 65535" in line


def test_serve_defaults_to_loopback() -> None:
    assert DEFAULT_SERVE_ADDR == "tcp://127.0.0.1:4157"


@pytest.mark.parametrize(
    ("argv", "address", "reason"),
    [
        (["send", "localhost:notaport", "hi"], "tcp://localhost:notaport", "not a number"),
        (["send", "localhost:99999", "hi"], "tcp://localhost:99999", "from 0 to 65535"),
        (["send", "foo://x:1", "hi"], "foo://x:1", "Protocol not supported"),
        (["bench", "localhost:notaport", "--duration", "0.5"], "tcp://localhost:notaport",
         "not a number"),
        (["bench", "foo://x:1", "--duration", "0.5"], "foo://x:1", "Protocol not supported"),
    ],
)  # fmt: skip
def test_bad_client_address_is_one_line_naming_it(
    argv: list[str], address: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert repr(address) in line
    assert reason in line


def test_bench_unwritable_results_fails_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "missing" / "x.json"
    start = time.monotonic()
    code = main(["bench", "tcp://127.0.0.1:1", "--duration", "20", "--timeout", "0.1",
                 "--results", str(results)])  # fmt: skip
    assert code == 2
    assert time.monotonic() - start < 5  # not after the 20 s run
    line = one_error_line(capsys)
    assert str(results) in line
    assert "No such file or directory" in line


def test_bench_results_error_inside_the_run_is_one_line_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the command's own check (here: skipped), benchmark()'s check fails inside trio.run
    and arrives in an exception group; the user still gets one line."""
    import trioprobe.cli._zmqnet as cli_zmqnet

    monkeypatch.setattr(cli_zmqnet, "check_appendable", lambda path: None)
    results = tmp_path / "missing" / "x.json"
    code = main(["bench", "tcp://127.0.0.1:1", "--duration", "20", "--timeout", "0.1",
                 "--results", str(results)])  # fmt: skip
    assert code == 2
    assert str(results) in one_error_line(capsys)


def test_serve_unwritable_metrics_out_fails_at_start_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = tmp_path / "missing" / "metrics.json"
    start = time.monotonic()
    code = main(["serve", "zmq", "--addr", "tcp://127.0.0.1:0", "--uptime", "20",
                 "--metrics-out", str(metrics)])  # fmt: skip
    assert code == 2
    assert time.monotonic() - start < 5  # not at shutdown, 20 s later
    line = one_error_line(capsys)
    assert str(metrics) in line
    assert "No such file or directory" in line
