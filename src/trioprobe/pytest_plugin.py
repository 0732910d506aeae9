"""pytest fixtures for test suites of code that uses trioprobe.

Installed trioprobe registers this module as the ``trioprobe`` plugin (``pytest11`` entry point).
It is off unless used: loading it only defines the ``trioprobe_*`` fixtures below; the servers
and their dependencies are imported when a test asks for one. The fixtures are async and need
pytest-trio: each runs in pytest-trio's ``nursery`` fixture, so it stops (by cancellation) when
the test ends. See docs/testing.md and :mod:`trioprobe.testing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import trio

    from .logping import MemoryLog
    from .testing import FakeTarget

__all__ = [
    "trioprobe_fake_target",
    "trioprobe_health_url",
    "trioprobe_memory_log",
    "trioprobe_zmq_echo",
]


@pytest.fixture
async def trioprobe_fake_target(nursery: trio.Nursery) -> FakeTarget:
    """A :class:`~trioprobe.testing.FakeTarget` served on loopback (``.url``); tell it to
    ``fail``, be ``slow`` or ``flap``. Under ``autojump_clock`` probe it through ``.client()``."""
    from .testing import start_fake_target

    return await start_fake_target(nursery)


@pytest.fixture
async def trioprobe_health_url(nursery: trio.Nursery) -> str:
    """The URL of an etcd-style health endpoint (``http://127.0.0.1:PORT/raft/probing``)."""
    from .testing import start_health_endpoint

    return await start_health_endpoint(nursery)


@pytest.fixture
async def trioprobe_zmq_echo(nursery: trio.Nursery) -> str:
    """The address (``tcp://127.0.0.1:PORT``) of a ZeroMQ ROUTER server echoing each request."""
    from .testing import start_zmq_echo

    return await start_zmq_echo(nursery)


@pytest.fixture
async def trioprobe_memory_log(nursery: trio.Nursery) -> MemoryLog:
    """An empty :class:`~trioprobe.logping.MemoryLog`, closed when the test ends."""
    from .testing import start_memory_log

    return await start_memory_log(nursery)
