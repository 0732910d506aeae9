"""The README's library example, run as a user would: it prints exports until Ctrl-C, and
Ctrl-C ends it cleanly (exit 0, no ``BaseExceptionGroup ... KeyboardInterrupt`` traceback)."""

from __future__ import annotations

import http.server
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HANG_GUARD = 60.0


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## As a library", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def _as_from_a_terminal() -> None:
    """The child gets SIGINT as a shell gives a foreground command: handled by default, not
    blocked, whatever pytest's own process has.

    A process inherits an ignored or blocked SIGINT across fork and exec. A non-interactive
    shell starts a background job (``cmd &``, no job control) with SIGINT and SIGQUIT ignored,
    and Python then leaves SIGINT ignored instead of raising KeyboardInterrupt: a suite started
    that way gives the example an ignored SIGINT and it goes on exporting, which is what two CI
    runs saw (the trioprobe command is not affected: it installs its own handler with
    trio.open_signal_receiver). No test leaves SIGINT changed (tests/conftest.py fails one that
    does). What Ctrl-C does to the example is the question here, not how pytest was started.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


# Each wait has its own hang guard; the default per-test timeout would cut them short.
@pytest.mark.timeout(600)
def test_readme_example_stops_cleanly_on_ctrl_c(tmp_path: Path, url: str) -> None:
    code, count = re.subn(r'TARGETS = \["[^"]*"\]', f'TARGETS = ["{url}"]', _snippet())
    assert count == 1, "the README example's TARGETS line changed"
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.Popen(
        [sys.executable, "-u", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_terminal,
    )
    try:
        assert proc.stdout is not None
        # Wait for its first export (the keeper exports every 5 s): it is really running.
        deadline = time.monotonic() + HANG_GUARD
        first = ""
        while not first and time.monotonic() < deadline and proc.poll() is None:
            first = proc.stdout.readline()
        assert url in first, first
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "KeyboardInterrupt" not in stderr
