"""``trioprobe run`` on a real terminal, as a user sees it: the live table under tmux, through a
failure and a recovery of a loopback target (issue 25 items 1 and 2).

tmux renders the terminal, so the test reads the screen the user would read (rich redraws the
table in place with cursor movements: the raw byte stream is not what is shown). Every wait is
for a condition on that screen, with a generous hang guard, never a fixed sleep: the verdict does
not depend on how busy the machine is.
"""

from __future__ import annotations

import http.server
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

HANG_GUARD = 90.0  # seconds; each phase normally takes about one second


class _Switch(http.server.BaseHTTPRequestHandler):
    healthy = True

    def do_GET(self) -> None:
        code = 200 if type(self).healthy else 503
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def switch() -> Iterator[tuple[type[_Switch], str]]:
    handler = type("Switch", (_Switch,), {"healthy": True})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()


class _Tmux:
    """A private tmux server (its own socket) with one 200x50 window."""

    def __init__(self, command: str, cwd: Path) -> None:
        self.socket = f"trioprobe-test-{uuid.uuid4().hex[:12]}"
        self._tmux("new-session", "-d", "-s", "t", "-x", "200", "-y", "50", "-c", str(cwd), command)

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "t", *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


def _wait_for(what: str, check: Callable[[], bool], describe: Callable[[], str]) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {HANG_GUARD:g} s for {what}; last screen:\n{describe()}")
        time.sleep(0.05)  # polling interval only: the verdict comes from the condition


def _row(screen: str, target: str) -> str:
    rows = [line for line in screen.splitlines() if target in line]
    return rows[-1] if rows else ""


# Each wait has its own hang guard; the default per-test timeout would cut them short.
@pytest.mark.timeout(600)
def test_live_table_shows_failure_and_recovery(
    tmp_path: Path, switch: tuple[type[_Switch], str]
) -> None:
    handler, url = switch
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[probe]]\nname = "svc"\ntype = "http"\ntargets = ["{url}"]\n'
        'interval = "100ms"\ntimeout = "2s"\n\n[[alert]]\nname = "svc-down"\n'
    )
    err, rc = tmp_path / "run.err", tmp_path / "rc"
    argv = [sys.executable, "-m", "trioprobe.cli", "run", str(config), "--refresh", "100ms"]
    # As a user would type it: stderr redirected to a file, stdout the terminal.
    # The trailing sleep keeps the pane (and the final table) on screen after the exit; the tmux
    # server is killed at the end.
    # The shell traps Ctrl-C (tmux sends it to the whole foreground group) so it survives to
    # record the exit status; trioprobe itself gets SIGINT with its default disposition.
    command = (
        f"trap true INT; {shlex.join(argv)} 2> {shlex.quote(str(err))}; "
        f"echo $? > {shlex.quote(str(rc))}; sleep 3600"
    )
    # COLUMNS/LINES from the test's environment would override the terminal's real size.
    env_prefix = f"env -u COLUMNS -u LINES PYTHONPATH={shlex.quote(os.pathsep.join(sys.path))} "
    tmux = _Tmux(env_prefix + f"sh -c {shlex.quote(command)}", tmp_path)
    try:
        row = lambda: _row(tmux.screen(), url)  # noqa: E731
        show = lambda: f"{tmux.screen()}\nstderr:\n{err.read_text() if err.exists() else ''}"  # noqa: E731
        _wait_for("the target to be up", lambda: " up " in row(), show)
        assert "last failure" not in row()

        handler.healthy = False
        _wait_for("the target to go down", lambda: " down " in row(), show)
        down = row()
        assert "503" in down, down  # the current error is shown
        assert "0.0%" in down or "%" in down

        handler.healthy = True
        _wait_for("the target to come back up", lambda: " up " in row(), show)
        # The recent window shows the recovery and the error is no longer shown as current.
        _wait_for("the last failure shown as past", lambda: "last failure" in row(), show)
        recovered = row()
        assert "503" not in recovered, recovered
        assert " ago" in recovered or "just now" in recovered, recovered

        tmux.keys("C-c")
        _wait_for("trioprobe to exit", rc.exists, show)
        _wait_for("its exit status", lambda: rc.read_text().strip() != "", show)
        assert rc.read_text().strip() == "0", err.read_text()
        final = tmux.screen()
    finally:
        tmux.close()
    # The final table (printed at exit) agrees: up, no stale error.
    final_row = _row(final, url)
    assert " up " in final_row, final
    assert "503" not in final_row, final
    # Every log line went to stderr (the file), none to the terminal: one fire, one resolve, at
    # the same level.
    logs = err.read_text().splitlines()
    fires = [line for line in logs if "alert 'svc-down' fire" in line]
    resolves = [line for line in logs if "alert 'svc-down' resolve" in line]
    assert len(fires) == 1, logs
    assert len(resolves) == 1, logs
    assert fires[0].split()[2] == resolves[0].split()[2] == "WARNING"
    assert "alert 'svc-down'" not in final
