"""The start-up check of RLIMIT_NOFILE against the targets' needs (issue 24 #7)."""

from __future__ import annotations

import logging
import resource

import pytest

from trioprobe import _fdlimit
from trioprobe._fdlimit import ensure_fd_limit, fd_needs


class FakeLimits:
    def __init__(self, soft: int, hard: int, *, may_raise: bool = True) -> None:
        self.soft, self.hard, self.may_raise = soft, hard, may_raise
        self.set_calls: list[tuple[int, int]] = []

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        self.set_calls.append(limits)
        if not self.may_raise:
            raise ValueError("not allowed to raise the current limit")
        self.soft, self.hard = limits


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> FakeLimits:
    fake = FakeLimits(256, 256)
    monkeypatch.setattr(_fdlimit.resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(_fdlimit.resource, "setrlimit", fake.setrlimit)
    return fake


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_needs_grow_with_targets_and_servers() -> None:
    assert fd_needs(1000, 2) > fd_needs(0, 2) + 1000
    assert fd_needs(0, 2) > fd_needs(0, 1)


def test_enough_changes_nothing(limits: FakeLimits, caplog: pytest.LogCaptureFixture) -> None:
    limits.soft = limits.hard = 4096
    assert ensure_fd_limit(fd_needs(100, 2)).enough
    assert limits.set_calls == []
    assert _warnings(caplog) == []


def test_soft_is_raised_to_hard(limits: FakeLimits, caplog: pytest.LogCaptureFixture) -> None:
    limits.soft, limits.hard = 256, 65536
    found = ensure_fd_limit(fd_needs(1000, 2))
    assert found.enough
    assert (found.raised_from, found.soft) == (256, 65536)
    assert limits.set_calls == [(65536, 65536)]
    assert _warnings(caplog) == []


def test_short_hard_limit_warns_once_with_the_numbers(
    limits: FakeLimits, caplog: pytest.LogCaptureFixture
) -> None:
    # `ulimit -n 256` and 1,000 targets: the numbers.
    needed = fd_needs(1000, 2)
    found = ensure_fd_limit(needed)
    assert not found.enough
    [line] = _warnings(caplog)
    assert f"about {needed} file descriptors" in line
    assert "allows 256 (hard limit 256)" in line
    assert f"ulimit -n {needed}" in line


def test_a_refused_raise_warns(limits: FakeLimits, caplog: pytest.LogCaptureFixture) -> None:
    limits.soft, limits.hard, limits.may_raise = 256, 65536, False
    found = ensure_fd_limit(fd_needs(1000, 2))
    assert not found.enough
    assert found.raised_from is None
    assert len(_warnings(caplog)) == 1


async def test_the_runner_checks_the_limit_for_its_targets_at_start(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: object
) -> None:
    import trio

    from trioprobe import runner as runner_module
    from trioprobe.config import parse_config
    from trioprobe.probes import probe_types

    seen: list[int] = []
    monkeypatch.setattr(runner_module, "ensure_fd_limit", seen.append)
    with probe_types.registered("fake", "tests.core.fake_probe"):
        config = parse_config(
            {"probe": [{"name": "p", "type": "fake", "targets": ["a", "b", "c"], "interval": 1.0}]}
        )
        runner = runner_module.Runner(config)
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            nursery.cancel_scope.cancel()
    assert seen == [fd_needs(3, servers=1)]
