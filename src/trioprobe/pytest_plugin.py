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
    from collections.abc import Awaitable, Callable, Mapping

    import trio

    from .checks import CheckFn, CheckReport
    from .logping import MemoryLog
    from .testing import FakeTarget

__all__ = [
    "trioprobe_run_check",
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


@pytest.fixture
def trioprobe_run_check() -> Callable[..., Awaitable[CheckReport]]:
    """Run a check (``async def check(ctx, target)``, see :mod:`trioprobe.checks`) as a test:
    ``await trioprobe_run_check(check, target)`` fails the test with the step and reason the
    monitor would report, and returns the :class:`~trioprobe.checks.CheckReport` when it passes.

    Keyword arguments: ``headers`` (sent on every request), ``time_limit`` (seconds, default
    30), ``verify_tls`` (default true), ``follow_redirects`` (default true): the ``ctx.http`` the
    ``script`` probe type builds from the same keys.
    """
    from .checks import new_http_client, run_check

    async def run(
        check: CheckFn,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        time_limit: float = 30.0,
        verify_tls: bool = True,
        follow_redirects: bool = True,
    ) -> CheckReport:
        name = getattr(check, "__qualname__", "check")
        async with new_http_client(
            headers=headers or {},
            verify=verify_tls,
            follow_redirects=follow_redirects,
            timeout=time_limit,
        ) as http:
            report = await run_check(check, target, http=http, time_limit=time_limit, name=name)
        if not report.success:
            pytest.fail(f"check {name} failed ({report.reason}): {report.message}", pytrace=False)
        return report

    return run
