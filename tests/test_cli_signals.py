"""``trioprobe run`` shuts down gracefully on SIGINT and SIGTERM: the probes stop, the keeper
makes its final export, the lines surfacer flushes it, and the process exits 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CONFIG = """
[[probe]]
name = "unreachable"
type = "http"
targets = ["http://127.0.0.1:9/"]
interval = 0.2
timeout = 0.1
stats_interval = 30.0

[[surfacer]]
type = "lines"
path = "{path}"
format = "json"
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_triggers_final_export(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "metrics.jsonl"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(path=out))
    proc = subprocess.Popen(
        [sys.executable, "-m", "trioprobe.cli", "run", str(config), "--quiet", "--refresh", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until probes have run (the quiet display prints a line per target).
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "unreachable" in line and "total=" in line:
                break
        else:
            pytest.fail("trioprobe run printed no progress")
        # The stats interval is 30 s, so anything in the file came from the final export.
        assert not out.exists() or out.read_text() == ""
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "shutting down" in stderr
    assert "Traceback" not in stderr
    exports = [json.loads(line) for line in out.read_text().splitlines()]
    # The keeper's final export: the target's counters, and its gauges (`up`, the last failure);
    # the alerting service's health metrics carry an `alert` label.
    exports = [e for e in exports if "alert" not in e["labels"]]
    assert [e["kind"] for e in exports] == ["CUMULATIVE", "GAUGE"]
    # The gauges: `up`, and why the last probe failed (nothing listens on port 9).
    assert exports[1]["metrics"] == {
        "up": 0,
        "last_failure_reason": "connect_refused",
        "last_failure_phase": "connect",
    }
    final = exports[0]
    assert final["labels"]["dst"] == "http://127.0.0.1:9/"
    assert final["metrics"]["total"] >= 1
    assert final["metrics"]["success"] == 0
