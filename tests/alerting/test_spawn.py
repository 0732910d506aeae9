"""Issue 24 item 3: the command notifier and the ``external`` probe leave no process behind
(helpers forked into the program's group die with it: on timeout, on shutdown, after exit);
what escapes with ``setsid`` is counted. Real processes, real time, every wait bounded."""

from __future__ import annotations

import contextlib
import os
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from trioprobe import _spawn
from trioprobe.alerting import DOWN, UP, Notice, Transition
from trioprobe.alerting.notify import CommandNotifier
from trioprobe.probes import external


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "prog.sh"
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that is not us counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _read_pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


async def _pids(path: Path, count: int) -> list[int]:
    """The first ``count`` pids the program wrote (a tiny file: read on the loop)."""
    with trio.fail_after(10):
        while len(found := _read_pids(path)) < count:  # noqa: ASYNC110
            await trio.sleep(0.01)
    return found[:count]


async def _all_dead(pids: list[int]) -> bool:
    # SIGKILL is delivered at once, but the reparented child is reaped by init a moment later.
    with trio.move_on_after(5):
        while any(_alive(p) for p in pids):  # noqa: ASYNC110
            await trio.sleep(0.01)
    return not any(_alive(p) for p in pids)


@contextlib.contextmanager
def _cleanup(path: Path) -> Iterator[None]:
    try:
        yield
    finally:
        for pid in _read_pids(path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# Helpers in the program's group: one that ignores SIGTERM, and one detached from stdout.
_FORK_AND_HANG = """
    (trap '' TERM; exec sleep 300) &
    echo $! >> {pids}
    sleep 300 >/dev/null 2>&1 &
    echo $! >> {pids}
    {tail}
"""


def _notice() -> Notice:
    return Notice("fire", Transition("p", "x", UP, DOWN, 1.0, 3, 3, "boom", "a"))


@pytest.mark.parametrize("tail", ["exit 0", "trap '' TERM; sleep 300"])
async def test_command_notifier_kills_its_whole_group(tmp_path: Path, tail: str) -> None:
    pids = tmp_path / "pids"
    script = _script(tmp_path, _FORK_AND_HANG.format(pids=pids, tail=tail))
    notifier = CommandNotifier((script,), timeout=1.0)
    with _cleanup(pids):
        await notifier.notify(_notice())
        helpers = await _pids(pids, 2)
        assert await _all_dead(helpers)


async def test_command_notifier_kills_its_group_on_shutdown(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = _script(tmp_path, _FORK_AND_HANG.format(pids=pids, tail="exec sleep 300"))
    notifier = CommandNotifier((script,), timeout=60.0)
    with _cleanup(pids):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(notifier.notify, _notice())
            helpers = await _pids(pids, 2)
            nursery.cancel_scope.cancel()  # shutdown
        assert await _all_dead(helpers)


async def test_setsid_escapes_are_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_spawn, "ESCAPE_SWEEP_INTERVAL", 0.0)
    pids = tmp_path / "pids"
    script = _script(
        tmp_path,
        f"""
        setsid sh -c 'echo $$ >> {pids}; exec sleep 300' >/dev/null 2>&1 < /dev/null &
        # Exit only once it is in its own session (it writes its pid from there).
        while [ ! -s {pids} ]; do sleep 0.01; done
        """,
    )
    notifier = CommandNotifier((script,), timeout=5.0)
    with _cleanup(pids):
        await notifier.notify(_notice())
        (escaped,) = await _pids(pids, 1)
        assert _alive(escaped)  # the documented limit: it left the group
        with trio.fail_after(10):
            while not notifier.watch.escaped:
                await notifier.watch.sweep_if_due()
        assert notifier.watch.escaped == 1
        assert f"pid {escaped}" in caplog.text
        await notifier.watch.sweep_if_due()
        assert notifier.watch.escaped == 1  # counted once


@pytest.mark.parametrize("tail", ["echo up 1", "exec sleep 300"])
async def test_external_probe_kills_its_whole_group(tmp_path: Path, tail: str) -> None:
    pids = tmp_path / "pids"
    script = _script(tmp_path, _FORK_AND_HANG.format(pids=pids, tail=tail))
    probe = external.ExternalProbe(
        external.Options(command=(script,)), list, interval=1.0, timeout=1.0
    )
    with _cleanup(pids):
        with trio.move_on_after(1.0):  # as run_per_target bounds a probe
            await probe.probe_once("x")
        helpers = await _pids(pids, 2)
        assert await _all_dead(helpers)
