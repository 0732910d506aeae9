"""``trioprobe serve health`` as a user runs it: a child process, a GET, then SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request

from trioprobe.cli import main
from trioprobe.probing.prober import parse_rfc3339_nano


def test_serve_health_answers_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "trioprobe.cli", "serve", "health", "--path", "/health"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving health on http://127.0.0.1:"), line
        url = line.split()[-1]
        assert url.endswith("/health")
        with urllib.request.urlopen(url, timeout=5) as response:
            reply = json.loads(response.read())
        assert reply["OK"] is True
        assert parse_rfc3339_nano(reply["Now"]) > 0
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_port_in_use_is_one_clear_line(capsys: object) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "trioprobe.cli", "serve", "health", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert result.returncode == 2
    assert result.stderr.startswith(f"trioprobe: error: cannot serve on 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr


def test_bad_arguments_are_user_errors() -> None:
    assert main(["serve", "health", "--path", "health"]) == 2
    assert main(["serve", "health", "--port", "70000"]) == 2
    assert main(["serve", "health", "--duration", "0"]) == 2


def test_duration_stops_by_itself() -> None:
    assert main(["serve", "health", "--duration", "0.2"]) == 0
