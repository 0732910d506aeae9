"""``trioprobe logping`` as a user runs it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from trioprobe.cli import main


def test_logping_memory_prints_reports(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under an autojump MockClock the command's 0.5 s are virtual, so the counts below are
    # exact however busy the machine is (in real time a loaded machine managed 9 of 25 pings).
    real_run = trio.run

    def run_on_mock_clock(fn: Callable[..., Awaitable[object]], *args: object) -> object:
        return real_run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))

    monkeypatch.setattr(trio, "run", run_on_mock_clock)
    rc = main(["logping", "memory", "--interval", "0.02", "--duration", "0.5", "--report", "0.2"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out[0] == "pinging memory every 0.02s"
    assert len(out) == 4  # reports at 0.2 s and 0.4 s, and the final one
    final = out[-1]
    assert final.startswith("pings ")
    started = int(final.split()[1])
    succeeded = int(final.split()[3])
    assert started in (24, 25)  # one every 0.02 s from 0.02 s; the last may meet the deadline
    assert succeeded >= started - 1
    assert "p50 " in final
    assert "ms" in final


def test_logping_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logping", "redis:x"]) == 2
    assert "is not one of" in capsys.readouterr().err
    assert main(["logping", "memory", "--interval", "0"]) == 2
    assert (
        "argument --interval: expected a finite number of seconds >= 0.001"
        in capsys.readouterr().err
    )
