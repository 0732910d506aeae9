"""``trioprobe run`` writes history, is killed with SIGKILL and started again: the store holds
every probe the target answered, except those of the period open at the kill.

The ground truth is the target's own log of the requests it answered (and how), so the
verdict does not depend on how fast the machine is: a slow start-up only moves the timeline.
The rollup period is 1 s here (``[history] rollup = 1``) to keep the test short; the default
is a minute, and the claim is the same: a kill loses at most the open period.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

CONFIG = """
[[probe]]
name = "web"
type = "http"
targets = ["http://127.0.0.1:{port}/"]
interval = 0.1
timeout = 0.5

[[alert]]
name = "web-down"
log = false

[history]
path = "{db}"
rollup = 1
"""


class _Target(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.up = True
        self.log: list[tuple[float, bool]] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Target

    def do_GET(self) -> None:
        up = self.server.up
        with self.server.lock:
            self.server.log.append((time.time(), up))
        body = b"ok\n" if up else b"down\n"
        self.send_response(200 if up else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "trioprobe.cli", "run", str(config), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for_requests(target: _Target, proc: subprocess.Popen[bytes], count: int) -> None:
    deadline = time.monotonic() + 60
    start = len(target.log)
    while len(target.log) < start + count:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        if time.monotonic() > deadline:
            pytest.fail("trioprobe run made no probes within 60 s")
        time.sleep(0.05)


def _phase(target: _Target, up: bool, seconds: float) -> None:
    target.up = up
    time.sleep(seconds)


def test_history_survives_sigkill(tmp_path: Path) -> None:
    target = _Target()
    server = threading.Thread(target=target.serve_forever, daemon=True)
    server.start()
    db = tmp_path / "history.sqlite"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(port=target.server_address[1], db=db))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        first = _start(config)
        procs.append(first)
        _wait_for_requests(target, first, 5)
        _phase(target, True, 2.0)
        _phase(target, False, 2.0)
        # Up long enough for the recovery to be written (the period, plus the write grace,
        # plus slack for a busy machine) before the kill.
        _phase(target, True, 4.0)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        killed_at = time.time()
        target.up = False  # down while nothing watches: no probe, so nothing to record
        second = _start(config)
        procs.append(second)
        _wait_for_requests(target, second, 5)
        _phase(target, False, 1.5)
        _phase(target, True, 2.5)
        second.send_signal(signal.SIGTERM)
        _, stderr = second.communicate(timeout=30)
        assert second.returncode == 0, stderr.decode()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        target.shutdown()
        target.server_close()
    with sqlite3.connect(db) as conn:
        probes, successes = conn.execute(
            "SELECT sum(probes), sum(successes) FROM rollup WHERE tier=0"
        ).fetchone()
        incidents = conn.execute(
            "SELECT start, end, reason FROM incident ORDER BY start"
        ).fetchall()
    conn.close()
    true_probes = len(target.log)
    true_successes = sum(up for _, up in target.log)
    # What the kill can take: the probes of the open period (1 s) and the write grace (1 s).
    at_risk = sum(1 for t, _ in target.log if killed_at - 3.0 <= t <= killed_at)
    lost = true_probes - probes
    print(
        f"answered {true_probes} ({true_successes} ok), recorded {probes} ({successes} ok), "
        f"lost {lost} of the {at_risk} answered in the last 3 s before the kill"
    )
    assert 0 <= lost <= at_risk
    assert 0 <= true_successes - successes <= at_risk
    true_uptime = true_successes / true_probes
    assert abs(successes / probes - true_uptime) <= at_risk / true_probes
    # Both outages are incidents with an end; the one that began while no run was watching
    # starts at the second run's first verdict.
    assert len(incidents) == 2, incidents
    assert all(end is not None and end > start for start, end, _ in incidents)
    assert all("503" in (reason or "") for _, _, reason in incidents), incidents
