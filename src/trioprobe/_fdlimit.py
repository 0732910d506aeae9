"""File descriptors: what the targets need, against ``RLIMIT_NOFILE`` (issue 24 #7).

With ``ulimit -n 256`` and 1,000 targets, probes used every descriptor and ``/metrics`` stopped
answering for the whole run. At start-up the runner estimates what it needs, raises the soft
limit to the hard one when that is short (allowed without privileges), and otherwise warns once
with the numbers. The servers keep a reserve of their own (``_asgi.FD_RESERVE``), so they answer
even when the probes have run out.
"""

from __future__ import annotations

import logging
import resource
from typing import Final

import attrs

from ._asgi import DEFAULT_MAX_CONNECTIONS, FD_RESERVE

__all__ = ["FdLimit", "ensure_fd_limit", "fd_needs"]

log = logging.getLogger("trioprobe.runner")

#: Descriptors per target: its connection or socket, and one more for a probe in flight beside
#: a kept-alive connection, or an external probe's pipes (an estimate, not a bound).
PER_TARGET: Final = 2
#: The process itself: stdio, the event loop's epoll and wake-up pipe, log and queue files.
BASE: Final = 64


def fd_needs(targets: int, servers: int) -> int:
    """Descriptors ``targets`` targets and ``servers`` HTTP servers are expected to use."""
    per_server = DEFAULT_MAX_CONNECTIONS + FD_RESERVE + 1  # its connections, reserve, listener
    return BASE + PER_TARGET * targets + per_server * servers


@attrs.frozen
class FdLimit:
    """What :func:`ensure_fd_limit` found and did."""

    needed: int
    #: The soft limit now (after raising it, if it was raised).
    soft: int
    hard: int
    #: The soft limit before, if it was raised.
    raised_from: int | None = None

    @property
    def enough(self) -> bool:
        return self.soft == resource.RLIM_INFINITY or self.soft >= self.needed


def ensure_fd_limit(needed: int) -> FdLimit:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard one if below ``needed``; warn if still short.

    Called once at start-up, so the warning is logged once per run.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = FdLimit(needed, soft, hard)
    if limit.enough:
        return limit
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.debug("cannot raise RLIMIT_NOFILE to %d: %s", hard, exc)
    else:
        limit = FdLimit(needed, hard, hard, raised_from=soft)
        log.info("raised the file descriptor limit from %d to %d (%d needed)", soft, hard, needed)
    if not limit.enough:
        log.warning(
            "the targets need about %d file descriptors but RLIMIT_NOFILE allows %d (hard "
            "limit %d): probes that find none left fail; raise it (ulimit -n %d, or LimitNOFILE= "
            "in a systemd unit)",
            needed,
            limit.soft,
            hard,
            needed,
        )
    return limit
