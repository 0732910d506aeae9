"""Child programs that leave nothing behind: the ``external`` probe's and the command notifier's.

Each program starts in a new session (so its own process group), and the whole group gets
SIGKILL when it runs past its time, when its owner is cancelled (shutdown), and also right after
it exits: a program that forks a helper and exits would otherwise leave the helper running for
good (60 ``sleep`` processes outlived one run of a probe that did that).

A process can still leave the group by starting its own session (``setsid``) or group: nothing
short of a PID namespace or cgroup can follow it. Those are counted, not killed (they may be
meant to run on, e.g. a daemon the program starts): every program gets ``TRIOPROBE_SPAWN`` in
its environment, which its descendants inherit, and :class:`EscapeWatch` looks (in a worker
thread, at most once per :data:`ESCAPE_SWEEP_INTERVAL`) for processes that carry the marker of a
program that has finished. Each is logged once with its pid and counted in ``escaped``. A process
that also clears its environment is not seen.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

import trio

__all__ = ["ENV_MARKER", "ESCAPE_SWEEP_INTERVAL", "EscapeWatch", "kill_group", "run_in_group"]

logger = logging.getLogger("trioprobe.spawn")

#: The environment variable that marks a spawned program and its descendants.
ENV_MARKER = "TRIOPROBE_SPAWN"
#: Seconds between two looks for escaped processes (each reads ``/proc``).
ESCAPE_SWEEP_INTERVAL = 60.0
#: Escaped pids remembered (so each is counted once); older ones are forgotten.
_REMEMBERED = 4096


async def kill_group(process: trio.Process) -> None:
    """SIGKILL ``process``'s whole group (it leads it: it was started in a new session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    await trio.lowlevel.checkpoint()


class EscapeWatch:
    """Marks each program one owner spawns, and counts descendants that escaped its group."""

    _owners = itertools.count(1)

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._prefix = f"{os.getpid()}.{next(self._owners)}."
        self._runs = itertools.count(1)
        self._running: set[str] = set()
        self._seen: dict[int, None] = {}
        self._last_sweep: float | None = None
        #: Processes found outside their program's group after it ended (each counted once).
        self.escaped = 0

    def new_marker(self) -> str:
        marker = f"{self._prefix}{next(self._runs)}"
        self._running.add(marker)
        return marker

    def finished(self, marker: str) -> None:
        self._running.discard(marker)

    async def sweep_if_due(self) -> int:
        """Look for escaped processes if the last look is :data:`ESCAPE_SWEEP_INTERVAL` old;
        the number newly found."""
        now = trio.current_time()
        if self._last_sweep is None:
            self._last_sweep = now  # nothing spawned before this can have escaped yet
        if now - self._last_sweep < ESCAPE_SWEEP_INTERVAL:
            return 0
        self._last_sweep = now
        running = frozenset(self._running)
        found = await trio.to_thread.run_sync(_find_marked, self._prefix, running)
        new = [pid for pid in found if pid not in self._seen]
        for pid in new:
            self._seen[pid] = None
            if len(self._seen) > _REMEMBERED:
                del self._seen[next(iter(self._seen))]
        if new:
            self.escaped += len(new)
            logger.warning(
                "%s: %d process(es) left their program's process group (setsid?) and outlived "
                "it: pid %s; not killed (%d so far)",
                self.owner,
                len(new),
                ", ".join(map(str, new[:20])),
                self.escaped,
            )
        return len(new)


def _find_marked(prefix: str, running: frozenset[str]) -> list[int]:
    """Worker thread: pids whose environment has a marker of ``prefix`` not in ``running``."""
    needle = f"{ENV_MARKER}={prefix}".encode()
    out: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue  # gone, or not ours to read
        for item in environ.split(b"\0"):
            if item.startswith(needle):
                marker = item.split(b"=", 1)[1].decode(errors="replace")
                if marker not in running:
                    out.append(int(name))
                break
    return out


class _Forward:
    """Keeps the started process (for the kill after exit) and passes it on."""

    def __init__(self, outer: trio.TaskStatus[trio.Process]) -> None:
        self.outer = outer
        self.process: trio.Process | None = None

    def started(self, value: trio.Process | None = None) -> None:
        self.process = value
        self.outer.started(value)  # type: ignore[arg-type]


async def run_in_group(
    argv: Sequence[str],
    watch: EscapeWatch,
    *,
    env: Mapping[str, str] | None = None,
    task_status: trio.TaskStatus[trio.Process] = trio.TASK_STATUS_IGNORED,
    **options: object,
) -> subprocess.CompletedProcess[bytes]:
    """``trio.run_process`` in a new session whose group is killed on cancel and after exit.

    ``options`` are ``trio.run_process``'s (``stdin``, ``stdout``, ``capture_stderr``...);
    ``check`` is off. Use it with ``nursery.start`` to get the :class:`trio.Process`.
    """
    marker = watch.new_marker()
    environment = {**(env if env is not None else os.environ), ENV_MARKER: marker}
    status = _Forward(task_status)
    try:
        return await trio.run_process(  # type: ignore[call-overload, no-any-return]
            list(argv),
            check=False,
            start_new_session=True,
            deliver_cancel=kill_group,
            env=environment,
            task_status=status,
            **options,
        )
    finally:
        # The program is gone (exited, or killed with its group); helpers it forked into its
        # group are not: kill them too. Its pid is its group's id, which stays taken while any
        # member lives, so this cannot hit an unrelated group.
        if status.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(status.process.pid, signal.SIGKILL)
        watch.finished(marker)
