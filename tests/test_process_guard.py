"""The suite's guard (tests/conftest.py) sees each way a test can leave the process changed
for later tests and the children they start, and puts the process back."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

import pytest

from .conftest import _ProcessState


def test_each_change_is_told_and_undone(tmp_path: Path) -> None:
    before = _ProcessState.now()
    assert before.changes_since(before) == []
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    os.chdir(tmp_path)
    os.environ["TRIOPROBE_GUARD_CHECK"] = "1"
    after = _ProcessState.now()
    before.restore(after.changed_handlers(before))
    assert after.changes_since(before) == [
        f"SIGUSR1 handler {before.handlers[signal.SIGUSR1]!r} -> <Handlers.SIG_IGN: 1>",
        "signal mask changed for SIGINT",
        f"working directory {before.cwd!r} -> {str(tmp_path)!r}",
        "environment variable TRIOPROBE_GUARD_CHECK None -> '1'",
    ]
    assert _ProcessState.now().changes_since(before) == []


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's ignored set is read from /proc")
def test_a_signal_ignored_outside_python_is_told_and_undone() -> None:
    before = _ProcessState.now()
    if signal.SIGUSR2 in before.ignored:
        pytest.skip("pytest was started with SIGUSR2 ignored")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.restype = ctypes.c_void_p
    libc.signal(int(signal.SIGUSR2), ctypes.c_void_p(1))  # SIG_IGN behind Python's back
    after = _ProcessState.now()
    before.restore(after.changed_handlers(before))
    assert after.changes_since(before) == ["SIGUSR2 handler 'not ignored' -> 'ignored'"]
    assert _ProcessState.now().changes_since(before) == []
