"""``trioprobe logping`` as a user runs it."""

from __future__ import annotations

import pytest

from trioprobe.cli import main


def test_logping_memory_prints_reports(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["logping", "memory", "--interval", "0.02", "--duration", "0.5", "--report", "0.2"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out[0] == "pinging memory every 0.02s"
    assert len(out) >= 3  # at least one periodic report and the final one
    final = out[-1]
    assert final.startswith("pings ")
    started = int(final.split()[1])
    succeeded = int(final.split()[3])
    assert started >= 15
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
