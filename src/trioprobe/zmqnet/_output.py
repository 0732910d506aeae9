"""Output files (server metrics, benchmark results) are checked before the work that fills them."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import trio

__all__ = ["check_appendable", "check_appendable_in_thread", "write_in_thread"]

log = logging.getLogger("trioprobe.zmqnet")

#: How long a final metrics append may take before shutdown goes on without it.
WRITE_TIMEOUT = 10.0


def check_appendable(path: str | os.PathLike[str]) -> None:
    """Open ``path`` for append and close it again; raise the ``OSError`` if that fails.

    Metrics and results are appended once, at the end of a run that may last hours: a typo in the
    path must fail at the start, not throw the run's figures away. Opening for append creates the
    file (empty) if it is missing, which the final append would have done anyway.
    """
    with open(path, "a", encoding="utf-8"):
        pass


async def check_appendable_in_thread(path: str | os.PathLike[str]) -> None:
    """:func:`check_appendable` in a worker thread: opening a file can block on a slow disk."""
    await trio.to_thread.run_sync(check_appendable, path)


async def write_in_thread(write: Callable[[], None], what: str) -> None:
    """Run ``write`` (a file append) in a worker thread, also while the caller is cancelled.

    The final metrics are written at shutdown, which is usually a cancellation: the write is
    shielded so it still happens, and bounded by ``WRITE_TIMEOUT`` so a hung disk cannot hold
    the shutdown (the thread is then abandoned, and the figures are lost with a warning).
    """
    with trio.CancelScope(shield=True), trio.move_on_after(WRITE_TIMEOUT) as scope:
        await trio.to_thread.run_sync(write, abandon_on_cancel=True)
    if scope.cancelled_caught:
        log.warning("%s: not written within %ss; given up", what, WRITE_TIMEOUT)
