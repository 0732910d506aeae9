"""``trioprobe demo``: its status page URL is printed, and stopping its ``svc`` target turns it
down on the page (and in the alert log) at the threshold, then up again once restarted."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

TIMEOUT = 60.0


def _targets(status_url: str) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(status_url + ".json", timeout=5) as resp:
        return {row["probe"]: row for row in json.load(resp)["targets"] if row["probe"] == "svc"}


def _wait_state(status_url: str, state: str) -> float:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        svc = _targets(status_url).get("svc")
        if svc is not None and svc["state"] == state:
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"svc never became {state}: {_targets(status_url)}")


def _post(url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5) as resp:
        assert resp.status == 200


def test_demo_target_stopped_turns_down_on_the_page() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "trioprobe.cli", "demo", "--quiet", "--refresh", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        control = status = ""
        deadline = time.monotonic() + TIMEOUT
        while not (control and status) and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "curl -X POST" in line:
                control = line.split("curl -X POST ")[1].split()[0]
            if line.startswith("status page at "):
                status = line.split()[-1]
        assert control.endswith("/stoppable/stop"), control
        assert status.endswith("/status"), status
        _wait_state(status, "up")
        _post(control)
        _wait_state(status, "down")
        _post(control.removesuffix("/stop") + "/start")
        _wait_state(status, "up")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    # Down within the threshold: the alert fired on the third failure (the default rule), not
    # later. Counted by the alerting itself, so no clock (and no machine load) is involved.
    fired = re.findall(
        r"alert 'svc-down' fire: probe 'svc' target '[^']*' is down \((\d+) of ", stderr
    )
    assert fired == ["3"], stderr
    assert "Traceback" not in stderr
