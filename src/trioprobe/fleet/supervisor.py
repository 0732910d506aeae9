"""``trioprobe run --workers N``, the parent's side: start N worker processes, restart any that
exits unexpectedly (counted), and drain them all on shutdown.

The parent does no per-probe work: a worker's only traffic to it is its readiness line and
its display's lines (one per target state change with ``--quiet``-style output). Each worker
runs in a session of its own, so a terminal's Ctrl-C reaches the parent alone, which then
stops the workers once (a second signal to a worker would mean "stop at once"). A worker
watches its standard input: when the parent dies, even by SIGKILL, the pipe closes and the
worker drains and exits by itself, so no worker outlives its parent.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

import attrs
import trio

from .workers import READY_PREFIX

__all__ = ["Supervisor", "WorkerFailed", "WorkerState", "restart_delay"]

logger = logging.getLogger("trioprobe.workers")

#: A worker that ran this long before exiting is restarted at once; one that keeps exiting
#: sooner waits 0.5, 1, 2 ... up to MAX_BACKOFF seconds between starts (a crash loop).
_STABLE_AFTER = 10.0
_MAX_BACKOFF = 30.0
#: A worker that has not drained this long after SIGTERM is killed.
_DRAIN_LIMIT = 60.0


class WorkerFailed(Exception):
    """A worker exited before it was ever ready: the run cannot start (its stderr says why)."""

    def __init__(self, index: int, code: int) -> None:
        super().__init__(f"worker {index} exited with status {code} before it was ready")
        self.index = index
        self.code = code


@attrs.define(eq=False)
class WorkerState:
    """What the parent knows of one worker slot."""

    index: int
    pid: int | None = None
    #: Restarts after an unexpected exit (``trioprobe_workers_restarts_total{worker}``).
    restarts: int = 0
    #: Its private URLs, from its readiness line; empty while (re)starting.
    metrics: tuple[str, ...] = ()
    status: str | None = None
    ready: bool = False
    #: Trio time of its latest readiness.
    since: float = 0.0
    last_exit: str = ""
    process: trio.Process | None = None
    #: Set by each readiness (tests wait on it).
    became_ready: trio.Event = attrs.field(factory=trio.Event)


class Supervisor:
    """Keeps ``count`` workers running; ``command(index)`` is a worker's argv."""

    def __init__(
        self,
        command: Callable[[int], Sequence[str]],
        count: int,
        *,
        output: TextIO | None = None,
    ) -> None:
        self.command = command
        self.workers = [WorkerState(i) for i in range(count)]
        self.output = output if output is not None else sys.stdout
        self.stopping = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every worker; ``started()`` once all are ready; return once all have exited
        after :meth:`shutdown`. Raises :class:`WorkerFailed` if one dies before its first
        readiness (a config the parent accepted but a worker did not: nothing to supervise)."""
        async with trio.open_nursery() as nursery:
            # All at once: a worker takes seconds to import and read its targets.
            async with trio.open_nursery() as starting:
                for worker in self.workers:
                    starting.start_soon(nursery.start, self._keep, worker)
            task_status.started()

    def shutdown(self) -> None:
        """SIGTERM every worker (each drains as ``trioprobe run`` does); no more restarts."""
        self.stopping = True
        self.forward(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL every worker (a second signal to the parent)."""
        self.stopping = True
        self.forward(signal.SIGKILL)

    def forward(self, signum: int) -> None:
        """Send ``signum`` to every running worker (SIGHUP: each reloads its config)."""
        for worker in self.workers:
            process = worker.process
            if process is not None and process.returncode is None:
                process.send_signal(signum)

    async def _keep(self, worker: WorkerState, *, task_status: trio.TaskStatus[None]) -> None:
        quick_exits = 0
        first = True
        while not self.stopping:
            started = trio.current_time()
            code = await self._run_once(worker, task_status if first else None)
            if first and not worker.ready and not self.stopping:
                raise WorkerFailed(worker.index, code)
            first = False
            worker.ready = False
            worker.metrics, worker.status = (), None
            worker.last_exit = _describe(code)
            if self.stopping:
                return
            worker.restarts += 1
            quick_exits = 0 if trio.current_time() - started >= _STABLE_AFTER else quick_exits + 1
            delay = restart_delay(quick_exits)
            logger.warning(
                "worker %d (pid %s) %s; restarting it%s (restart %d)",
                worker.index,
                worker.pid,
                worker.last_exit,
                f" in {delay:g} s" if delay else "",
                worker.restarts,
            )
            await trio.sleep(delay)

    async def _run_once(
        self, worker: WorkerState, task_status: trio.TaskStatus[None] | None
    ) -> int:
        process = await trio.lowlevel.open_process(
            list(self.command(worker.index)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        worker.process, worker.pid = process, process.pid
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_lines, worker, process, task_status)
                await process.wait()
        finally:
            with trio.CancelScope(shield=True):
                await _reap(process)
            if process.stdin is not None:
                await process.stdin.aclose()
        return process.returncode if process.returncode is not None else -1

    async def _read_lines(
        self,
        worker: WorkerState,
        process: trio.Process,
        task_status: trio.TaskStatus[None] | None,
    ) -> None:
        """Forward the worker's lines to our output; take its readiness line for ourselves."""
        assert process.stdout is not None
        buffer = b""
        async with process.stdout:
            while True:
                chunk = await process.stdout.receive_some(65536)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace")
                    if line.startswith(READY_PREFIX):
                        self._ready(worker, line[len(READY_PREFIX) :], task_status)
                        task_status = None
                    else:
                        print(line, file=self.output, flush=True)
        if buffer:
            print(buffer.decode("utf-8", "replace"), file=self.output, flush=True)

    def _ready(
        self, worker: WorkerState, text: str, task_status: trio.TaskStatus[None] | None
    ) -> None:
        info = json.loads(text)
        worker.metrics = tuple(info["metrics"])
        worker.status = info["status"]
        worker.ready = True
        worker.since = trio.current_time()
        worker.became_ready.set()
        worker.became_ready = trio.Event()
        if task_status is not None:
            task_status.started()


def restart_delay(quick_exits: int) -> float:
    """Seconds before restarting a worker that exited ``quick_exits`` times in a row within
    ``_STABLE_AFTER`` of its start: none after a long run (a crash is restarted at once), then
    0.5, 1, 2 ... up to ``_MAX_BACKOFF`` (a crash loop does not spin)."""
    if quick_exits <= 0:
        return 0.0
    return float(min(_MAX_BACKOFF, 0.5 * 2 ** min(quick_exits - 1, 16)))


async def _reap(process: trio.Process) -> None:
    """Wait for ``process`` to exit: it was told to stop, or our run is being cancelled, in
    which case it gets SIGTERM, then SIGKILL after the drain limit."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    with trio.move_on_after(_DRAIN_LIMIT):
        await process.wait()
        return
    process.kill()
    await process.wait()


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
