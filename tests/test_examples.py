"""Each runnable example in examples/ runs to its end (exit 0, no traceback) and prints what it
says it shows. The checks are on what the examples report, not on how fast: the machine's load
changes the figures, not these facts. (alerting_failover.py: tests/alerting/test_example.py;
the plugin: tests/test_plugin_example.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard: each runs for a few seconds
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout + done.stderr


def test_embed_http_probe() -> None:
    out = run_example("embed_http_probe.py")
    health = [
        line
        for line in out.splitlines()
        if "dst=http://" in line and "/health " in line and " total=" in line
    ]
    # The counters' lines (the gauges' lines carry `up` and the last failure's reason).
    missing = [line for line in out.splitlines() if "/missing " in line and " total=" in line]
    assert any('last_failure_reason="http_status"' in line for line in out.splitlines()), out
    assert health, out
    assert missing, out
    # Every probe of the health endpoint succeeded unless it timed out (0.2 s: a loaded machine
    # may do that); none of the missing path succeeded, and each that was answered got a 404.
    counts = re.search(r" total=(\d+) success=(\d+) timeouts=(\d+) ", health[-1])
    assert counts is not None
    total, success, timeouts = map(int, counts.groups())
    assert total > 0
    assert success + timeouts == total
    counts = re.search(r" total=(\d+) success=0 timeouts=(\d+) .*404:(\d+)", missing[-1])
    assert counts is not None, missing[-1]
    total, timeouts, not_found = map(int, counts.groups())
    assert not_found + timeouts == total


def test_handoff_replay() -> None:
    out = run_example("handoff_replay.py")
    assert "delivered in order: True" in out
    assert "replayed_records=20" in out
    assert "replay_errors=5" in out  # the receiver was down for its first five calls
    assert "head record: None" in out
    assert "recovery: clean" in out


def test_logping_embed() -> None:
    out = run_example("logping_embed.py", "--seconds", "1")
    assert out.count("counters:") == 2, out  # the memory log and the file log
    for counters in re.findall(r"counters: (\{.*\})", out):
        values = dict(re.findall(r"'(\w+)': (\d+)", counters))
        assert int(values["pings_succeeded"]) > 0, out
        assert values["restarts"] == "0", out


def test_probing_peers() -> None:
    out = run_example("probing_peers.py")
    last = {
        m[1]: m
        for m in re.finditer(r"t=\d+s\s+(\w+): total=\s*\d+ loss=\s*(\d+) health=(\w+)", out)
    }
    assert set(last) == {"stable", "flaky", "either"}, out
    assert last["stable"][2] == "0"
    assert last["stable"][3] == "True"
    assert last["flaky"][3] == "False"  # it went away halfway
    assert last["either"][3] == "True"  # and the two-address id moved on to the other


def test_zmqnet_echo() -> None:
    out = run_example("zmqnet_echo.py")
    assert "'hello' -> b'HELLO'" in out
    assert "error frame, as expected" in out
    assert re.search(r"benchmark: [1-9]\d* replies, \d+ drops", out), out
    assert "dropped, as expected" in out
