"""Helpers for test suites that use trioprobe: small servers bound to your nursery, a fake probe
target you can break on purpose, and a check that nothing outlives a block.

Every server here follows the house pattern: ``await nursery.start(...)`` binds on loopback,
returns the bound URL or address, and the server runs until that nursery is cancelled, which is
its only shutdown. The ``start_*`` functions are that call spelled once::

    async with trio.open_nursery() as nursery:
        url = await start_health_endpoint(nursery)      # http://127.0.0.1:PORT/raft/probing
        addr = await start_zmq_echo(nursery)            # tcp://127.0.0.1:PORT
        log = await start_memory_log(nursery)           # a MemoryLog, closed on cancellation
        target = await start_fake_target(nursery)       # a FakeTarget served on target.url
        ...
        nursery.cancel_scope.cancel()

Mock time: ``autojump_clock`` advances whenever every task is blocked, including tasks waiting
on a real socket, so a test on a mock clock must not wait on real I/O. :meth:`FakeTarget.client`
answers in memory (no socket) and its delays are ``trio.sleep``, so probes of it are exact under
``autojump_clock``; the real-socket servers are for real-time tests bounded by ``fail_after``.

The pytest plugin (:mod:`trioprobe.pytest_plugin`) wraps these as ``trioprobe_*`` fixtures.
This module imports the capabilities (``probing``, ``zmqnet``, ``logping``) only when the helper
that needs them is called. See docs/testing.md.

Two modules: :mod:`.servers` (the fake target and the ``start_*`` servers) and :mod:`.leaks`
(:func:`assert_no_leaks`); every name is importable from ``trioprobe.testing``.
"""

from .leaks import LeakError, Leaks, assert_no_leaks
from .servers import (
    FakeTarget,
    Reply,
    start_fake_target,
    start_health_endpoint,
    start_memory_log,
    start_zmq_echo,
)

__all__ = [
    "FakeTarget",
    "Reply",
    "start_fake_target",
    "start_health_endpoint",
    "start_zmq_echo",
    "start_memory_log",
    "assert_no_leaks",
    "LeakError",
    "Leaks",
]
