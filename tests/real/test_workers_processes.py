"""``trioprobe run --workers 2`` as real processes: the targets split between the workers, one
``/metrics`` for the host (each worker's series once, ``promtool check metrics`` silent), a
worker killed with SIGKILL restarted (counted) and probing its targets again, and SIGTERM to the
parent draining every worker.

Verdicts are on what the target server logged and what /metrics says; the waits are hang guards
with generous limits (the machine is shared), never verdicts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from trioprobe.fleet.workers import owner_of, worker_members

from .fleet_peers import TargetServer
from .services import require_binary

pytestmark = [pytest.mark.real, pytest.mark.slow]

TARGETS = 40
GUARD = 90.0

CONFIG = """
[[probe]]
name = "web"
type = "http"
targets_file = "targets.txt"
interval = 0.5
timeout = 2

[[surfacer]]
type = "prometheus"
port = 0

[status]
port = 0
"""


def _wait(what: str, pred: Callable[[], bool], show: Callable[[], str]) -> None:
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > GUARD:
            pytest.fail(f"not within {GUARD}s: {what}\n{show()}")
        time.sleep(0.2)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return str(answer.read().decode())


class Host:
    """The parent process, its output in a file."""

    def __init__(self, workdir: Path) -> None:
        self.log = workdir / "host.log"
        config = workdir / "host.toml"
        config.write_text(CONFIG)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "trioprobe.cli", "run", str(config), "--workers", "2"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def found(self, pattern: str) -> str | None:
        match = re.search(pattern, self.output(), re.MULTILINE)
        return match.group(1) if match else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _series(body: str, name: str) -> list[dict[str, str]]:
    out = []
    for line in body.splitlines():
        if line.startswith(name + "{"):
            labels = line[len(name) + 1 : line.rindex("}")]
            out.append(dict(re.findall(r'(\w+)="([^"]*)"', labels)))
    return out


def _host_rows(status: str) -> dict[str, int]:
    """The host page's merged overview: each target listed and the worker it names."""
    rows = re.findall(
        r'<a href="/status/web/[^"]*">([^<]*)</a>.*?<a href="/worker/(\d+)/status">', _get(status)
    )
    return {target: int(worker) for target, worker in rows}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(600)
def test_two_workers_share_the_targets_behind_one_metrics_url(tmp_path: Path) -> None:
    promtool = require_binary("promtool", "prometheus")
    with TargetServer() as server:
        urls = [server.url(i) for i in range(TARGETS)]
        (tmp_path / "targets.txt").write_text("".join(u + "\n" for u in urls))
        members = worker_members(2)
        owner = {u: owner_of("web", u, members) for u in urls}
        assert set(owner.values()) == {0, 1}  # both workers own some (else the test says little)
        host = Host(tmp_path)
        try:
            _exercise(host, server, owner, promtool)
        finally:
            host.stop()
        assert "Traceback" not in host.output(), host.output()[-3000:]


def _exercise(host: Host, server: TargetServer, owner: dict[str, int], promtool: str) -> None:
    show = host.output
    running = r"^2 workers running \(pids (.*)\)"
    _wait("both workers running", lambda: host.found(running) is not None, show)
    # The parent's lines (a worker's own URLs are in its log lines, which start with a time).
    metrics = host.found(r"^prometheus serving at (\S+)")
    status = host.found(r"^status page at (\S+)")
    assert metrics
    assert status
    pids = [int(p) for p in (host.found(running) or "").split(", ")]

    def every_target_once() -> bool:
        body = _get(metrics + "/metrics")
        seen = _series(body, "trioprobe_success_total")
        return len(seen) == len(owner) and all(int(s["worker"]) == owner[s["dst"]] for s in seen)

    _wait("every target's series, once, from its owner", every_target_once, show)
    body = _get(metrics + "/metrics")
    check = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60
    )
    said = check.stdout + check.stderr
    assert check.returncode == 0, said
    assert not said.strip(), said
    assert len(re.findall(r"^# TYPE trioprobe_success_total ", body, re.M)) == 1
    # One JSON list for the host: every target, once.
    listed = json.loads(_get(status + ".json"))["targets"]
    assert sorted(t["target"] for t in listed) == sorted(owner)
    # One overview for the host: every target once, merged from both workers, with its owner.
    _wait("every target on the host's page", lambda: _host_rows(status) == owner, show)

    # SIGKILL worker 1: the parent restarts it, counts it, and its targets are probed again.
    os.kill(pids[1], signal.SIGKILL)
    killed = time.monotonic()
    restarted = r'trioprobe_workers_restarts_total\{worker="1"\} 1'
    _wait(
        "the restart counted",
        lambda: re.search(restarted, _get(metrics + "/metrics")) is not None,
        show,
    )
    ones = {u.removeprefix(f"http://127.0.0.1:{server.port}") for u, w in owner.items() if w == 1}

    def probed_again() -> bool:
        return ones <= set(server.probers(killed + 1.0))

    _wait("worker 1's targets probed again", probed_again, show)
    _wait(
        "the restarted worker's targets back on the host page",
        lambda: _host_rows(status) == owner,
        show,
    )
    assert not _alive(pids[1])
    assert "worker 1" in host.output()
    assert "SIGKILL" in host.output()
    # SIGTERM to the parent: every worker drains and exits, then the parent, with status 0.
    workers_now = [int(p) for p in re.findall(r"<td>(\d+)</td><td>running", _get(status))]
    assert len(workers_now) == 2
    assert pids[1] not in workers_now
    host.proc.send_signal(signal.SIGTERM)
    assert host.proc.wait(GUARD) == 0
    assert not any(_alive(p) for p in workers_now)
