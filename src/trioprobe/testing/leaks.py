"""The leak check of :mod:`trioprobe.testing`: what a block left running or open, from Trio's
task tree, the process's threads and ``/proc/self/fd``."""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import attrs
import trio
import trio.lowlevel

__all__ = ["assert_no_leaks", "LeakError", "Leaks"]


# --- the leak check ---------------------------------------------------------------------------


@attrs.frozen
class Leaks:
    """What outlived a block, one readable line per item (empty tuples when clean)."""

    tasks: tuple[str, ...] = ()
    threads: tuple[str, ...] = ()
    fds: tuple[str, ...] = ()
    #: A likely explanation, when one is known.
    hint: str | None = None

    def __bool__(self) -> bool:
        return bool(self.tasks or self.threads or self.fds)

    def __str__(self) -> str:
        lines = [*self.tasks, *self.threads, *self.fds]
        text = f"{len(lines)} outlived the block:\n" + "\n".join(f"  {line}" for line in lines)
        return text if self.hint is None else f"{text}\n{self.hint}"


class LeakError(AssertionError):
    """Raised by :func:`assert_no_leaks`; :attr:`leaks` says what outlived the block."""

    def __init__(self, leaks: Leaks) -> None:
        super().__init__(str(leaks))
        self.leaks = leaks


# Trio keeps finished to_thread workers for a while to reuse them; an idle one carries its
# default name (a job's thread is renamed while it runs), so it is a cache entry, not a leak.
_TRIO_IDLE_WORKER = re.compile(r"Trio thread \d+")
_TRIO_DIR = os.path.dirname(trio.__file__) + os.sep


@attrs.frozen
class _Snapshot:
    tasks: frozenset[trio.lowlevel.Task]
    threads: frozenset[threading.Thread]
    native_threads: frozenset[int]
    fds: frozenset[tuple[int, str]]
    zmq_context: bool


def _walk_tasks(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    yield task
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from _walk_tasks(child)


def _fd_table() -> frozenset[tuple[int, str]]:
    """(fd, what it points to) for every open fd; empty where /proc is missing (not Linux)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return frozenset()
    table = set()
    for name in names:
        try:
            table.add((int(name), os.readlink(f"/proc/self/fd/{name}")))
        except OSError:
            continue  # closed meanwhile, e.g. the fd listdir itself used
    return frozenset(table)


def _native_threads() -> frozenset[int]:
    try:
        return frozenset(int(tid) for tid in os.listdir("/proc/self/task"))
    except OSError:
        return frozenset()


def _snapshot(check_tasks: bool) -> _Snapshot:
    root = trio.lowlevel.current_root_task()
    tasks = frozenset(_walk_tasks(root)) if check_tasks and root is not None else frozenset()
    return _Snapshot(
        tasks=tasks,
        threads=frozenset(threading.enumerate()),
        native_threads=_native_threads(),
        fds=_fd_table(),
        zmq_context=_zmq_context_started(),
    )


def _zmq_loaded() -> bool:
    # Not imported: it cannot have started its context, and importing it here would cost the
    # leak check the whole of pyzmq.
    return "trioprobe.zmqnet" in sys.modules


def _zmq_context_started() -> bool:
    if not _zmq_loaded():
        return False
    from ..zmqnet import shared_context_started

    return shared_context_started()


def _describe_task(task: trio.lowlevel.Task) -> str:
    parent = task.parent_nursery.parent_task.name if task.parent_nursery is not None else None
    where = ""
    # The innermost frame outside Trio itself: the caller's await, not Trio's scheduler trap.
    frames = [
        (frame, lineno)
        for frame, lineno in task.iter_await_frames()
        if not frame.f_code.co_filename.startswith(_TRIO_DIR)
    ]
    if frames:
        frame, lineno = frames[-1]
        code = frame.f_code
        where = f", waiting in {code.co_name} at {code.co_filename}:{lineno}"
    return f"task {task.name!r} (child of {parent!r}{where})"


def _describe_fd(fd: int, target: str) -> str:
    text = f"fd {fd} -> {target}"
    if not target.startswith("socket:"):
        return text
    try:
        copy = os.dup(fd)
    except OSError:
        return text  # closed meanwhile; the inode is all we have
    try:
        sock = socket.socket(fileno=copy)
    except OSError:
        os.close(copy)  # no longer a socket (closed and reused meanwhile)
        return text
    with sock:
        kind = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "datagram"}.get(
            sock.type, str(sock.type)
        )
        try:
            local = sock.getsockname()
        except OSError:
            local = "?"
        try:
            peer = f" -> {sock.getpeername()}"
        except OSError:
            peer = ""  # not connected (a listener, or an unconnected datagram socket)
    return f"{text} ({sock.family.name} {kind} {local}{peer})"


def _comm(tid: int) -> str:
    try:
        with open(f"/proc/self/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _leaks(before: _Snapshot, after: _Snapshot) -> Leaks:
    tasks = sorted(after.tasks - before.tasks, key=lambda t: t.name)
    threads = [
        t
        for t in after.threads - before.threads
        if t.is_alive() and not _TRIO_IDLE_WORKER.fullmatch(t.name)
    ]
    # Native threads (libzmq's I/O threads, C extensions) that no Python thread accounts for.
    python_tids = {t.native_id for t in after.threads if t.native_id is not None}
    native = sorted(after.native_threads - before.native_threads - python_tids)
    fds = sorted(after.fds - before.fds)
    hint = None
    if after.zmq_context and not before.zmq_context:
        hint = (
            "trioprobe's process-wide zmq context (its threads and fds live as long as the "
            "process) was started inside the block: import trioprobe.zmqnet before the block"
        )
    return Leaks(
        tasks=tuple(_describe_task(t) for t in tasks),
        threads=(
            *(f"thread {t.name!r} (ident {t.ident}, daemon={t.daemon})" for t in threads),
            *(f"native thread {tid} {_comm(tid)!r}" for tid in native),
        ),
        fds=tuple(_describe_fd(fd, target) for fd, target in fds),
        hint=hint,
    )


def _warm_process_singletons() -> None:
    """Start trioprobe's process-wide zmq context (its I/O threads and fds live for the whole
    process) before the first snapshot, so its first use inside a block is not a leak."""
    if _zmq_loaded():
        import zmq

        from ..zmqnet import shared_context

        shared_context().socket(zmq.PAIR).close(linger=0)


@asynccontextmanager
async def assert_no_leaks(
    *, tasks: bool = True, threads: bool = True, fds: bool = True, settle: float = 1.0
) -> AsyncIterator[None]:
    """Raise :class:`LeakError` if a task, thread, fd or socket started in the block outlives it.

    Compares, before and after the block: Trio's whole task tree (a task started into an outer
    nursery is a leak), ``threading.enumerate()`` plus the process's native threads, and the open
    file descriptors of ``/proc/self/fd`` (sockets are described by family and addresses). Linux
    only for threads-by-tid and fds; elsewhere those parts compare empty sets.

    Some things close just after the block: a cancelled task runs on until its next checkpoint,
    libzmq closes sockets in its reaper thread. So when something looks leaked the check looks
    again, waiting in a worker thread, for up to ``settle`` seconds of real time before it fails.
    Trio's idle cached worker threads are not leaks; neither is trioprobe's process-wide zmq
    context (started before the first snapshot if ``trioprobe.zmqnet`` is loaded). If the block
    raises, its exception propagates and nothing is checked.
    """
    if threads or fds:
        _warm_process_singletons()
    before = _snapshot(tasks)
    yield
    deadline = time.monotonic() + settle
    while True:
        leaks = _leaks(before, _snapshot(tasks))
        leaks = attrs.evolve(
            leaks,
            tasks=leaks.tasks if tasks else (),
            threads=leaks.threads if threads else (),
            fds=leaks.fds if fds else (),
        )
        if not leaks or time.monotonic() >= deadline:
            break
        # Real time on purpose: what we wait for (threads, libzmq) does not follow a mock clock.
        await trio.to_thread.run_sync(time.sleep, 0.01)
    if leaks:
        raise LeakError(leaks)
