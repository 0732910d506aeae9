"""``trioprobe run``: SIGHUP and ``POST /-/reload`` reload the config file in a running process.

The http probes target the process's own /metrics over kept-alive connections, so "untouched"
is visible from outside: the unchanged probe's ``probes_total`` keeps rising with no reset, and
its ``connections_total{state="new"}`` does not move (no connection was reopened)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from ..real.services import free_port

PROBE = """
[[probe]]
name = "{name}"
type = "{type}"
targets = ["{target}"]
interval = {interval}
timeout = 1.0
stats_interval = 1.0
"""
SURFACER = '\n[[surfacer]]\ntype = "prometheus"\nport = {port}\n'


def _config(port: int, probes: list[tuple[str, str, float]]) -> str:
    text = ""
    for name, type_, interval in probes:
        target = f"http://127.0.0.1:{port}/metrics" if type_ == "http" else f"127.0.0.1:{port}"
        text += PROBE.format(name=name, type=type_, target=target, interval=interval)
        if type_ == "http":
            text += 'detail = "full"\n'  # connections_total, checked below, is in full only
    return text + SURFACER.format(port=port)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _value(text: str, family: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(family + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


class _Lines:
    """The process's stdout lines, read by a thread so the test can wait with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        stdout = proc.stdout
        self._thread = threading.Thread(target=lambda: self.lines.extend(iter(stdout.readline, "")))
        self._thread.daemon = True
        self._thread.start()

    def wait_for(self, pattern: str, after: int = 0, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        pytest.fail(f"no line matching {pattern!r}; got {self.lines[-20:]}")


def _wait_metric(port: int, check: object, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = _scrape(port)
        except OSError:  # not serving yet
            text = ""
        if text and check(text):  # type: ignore[operator]
            return text
        time.sleep(0.2)
    pytest.fail(f"metrics never matched: {text[-2000:]}")


def test_sighup_and_reload_endpoint(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.toml"
    before = [("keep", "http", 0.2), ("change", "http", 0.3), ("gone", "tcp", 0.3)]
    after = [("keep", "http", 0.2), ("change", "http", 0.25), ("added", "tcp", 0.3)]
    config.write_text(_config(port, before))
    proc = subprocess.Popen(
        [sys.executable, "-m", "trioprobe.cli", "run", str(config), "--quiet", "--refresh", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _Lines(proc)
        total = "trioprobe_probes_total"
        text = _wait_metric(port, lambda t: (_value(t, total, probe="keep") or 0) >= 5)
        new_conns = _value(text, "trioprobe_connections_total", probe="keep", state="new")
        assert new_conns == 1
        keep_before = _value(text, total, probe="keep")
        assert keep_before is not None

        config.write_text(_config(port, after))
        proc.send_signal(signal.SIGHUP)
        line = lines.wait_for(r"^trioprobe: reloaded")
        assert line.strip() == (
            f"trioprobe: reloaded {config}: probe 'change' changed (restarted), probe 'gone' "
            "removed, probe 'added' added; 1 probe(s) untouched"
        )
        text = _wait_metric(port, lambda t: _value(t, total, probe="added") is not None)
        text = _wait_metric(
            port, lambda t: (_value(t, total, probe="keep") or 0) >= keep_before + 5
        )
        assert _value(text, "trioprobe_connections_total", probe="keep", state="new") == 1

        # An invalid config: nothing changes, the failure is counted and said.
        config.write_text(_config(port, after).replace("interval = 0.2", "interval = -1"))
        mark = len(lines.lines)
        proc.send_signal(signal.SIGHUP)
        line = lines.wait_for(r"^trioprobe: reload failed", after=mark)
        assert "still running the previous config" in line
        assert "probe[0].interval" in line
        _wait_metric(
            port,
            lambda t: (
                _value(t, "trioprobe_config_reloads_total", result="failure") == 1
                and _value(t, "trioprobe_config_last_reload_successful") == 0
            ),
        )
        keep_now = _value(_scrape(port), total, probe="keep") or 0
        _wait_metric(port, lambda t: (_value(t, total, probe="keep") or 0) > keep_now)

        # POST /-/reload from loopback: the fixed config is loaded.
        config.write_text(_config(port, before))
        request = urllib.request.Request(f"http://127.0.0.1:{port}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=30) as resp:
            body = resp.read().decode()
            assert resp.status == 200
        assert "probe 'gone' added" in body
        _wait_metric(port, lambda t: _value(t, "trioprobe_config_last_reload_successful") == 1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
