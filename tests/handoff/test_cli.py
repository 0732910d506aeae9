"""``trioprobe queue inspect`` / ``dump``."""

from __future__ import annotations

from pathlib import Path

import pytest

from trioprobe.cli import main
from trioprobe.handoff import open_queue


async def make_queue(d: Path) -> None:
    async with open_queue(d, max_segment_size=200) as q:
        for i in range(10):
            await q.append(b"record %d" % i)
        await q.advance()


async def test_inspect_shows_segments_head_and_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "q"
    await make_queue(d)
    data = bytearray((d / "2").read_bytes())
    data[-1] ^= 0xFF  # a torn/corrupt tail in the last segment
    (d / "2").write_bytes(bytes(data))
    assert main(["queue", "inspect", str(d)]) == 0
    out = capsys.readouterr().out
    assert "head: segment 1 offset 40" in out  # past the first record (16 + 16 + 8 bytes)
    assert "total: 2 segments" in out
    assert "9 records, 8 pending" in out  # the damaged last record is not counted


async def test_dump_prints_pending_records(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    d = tmp_path / "q"
    await make_queue(d)
    assert main(["queue", "dump", "--raw", str(d)]) == 0
    assert capsysbinary.readouterr().out == b"".join(b"record %d\n" % i for i in range(1, 10))
    assert main(["queue", "dump", "--limit", "2", str(d)]) == 0
    lines = capsysbinary.readouterr().out.decode().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("1:")
    assert lines[0].endswith("\trecord 1")
    assert main(["queue", "dump", "--all", "--raw", str(d)]) == 0
    assert capsysbinary.readouterr().out.startswith(b"record 0\n")


def test_missing_directory_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["queue", "inspect", str(tmp_path / "nope")]) == 2
    assert "is not a queue directory" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["inspect", "dump"])
def test_a_directory_that_is_no_queue_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    """Not an empty table with exit 0, which reads as "an empty queue"."""
    (tmp_path / "notes.txt").write_text("x")
    assert main(["queue", action, str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "is not a queue directory (no segment, head or lock file)" in err


def test_a_file_is_not_called_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["queue", "inspect", str(f)]) == 2
    err = capsys.readouterr().err
    assert "it is not a directory" in err
    assert "does not exist" not in err


async def test_dump_rejects_a_negative_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "q"
    await make_queue(d)
    # Argument mistakes are one `trioprobe: error:` line and exit 2, like every user error.
    assert main(["queue", "dump", "--limit", "-1", str(d)]) == 2
    assert "--limit: must be >= 0" in capsys.readouterr().err
