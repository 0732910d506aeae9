"""The queue's blocking file work (appends, fsyncs, recovery on open, reads) runs in worker
threads, never on the Trio thread: the module doc's promise that "the event loop never stalls on
the disk", checked by watching which thread each blocking call runs in."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from trioprobe.handoff import disk_queue as queue_mod
from trioprobe.handoff import open_queue


def tear_tail(directory: Path) -> None:
    """Append half a record to the tail segment, as a crash mid-write leaves it."""
    tail = max((p for p in directory.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    with open(tail, "ab") as f:
        f.write(b"\x00\x00\x00\x09torn")


async def test_appends_fsyncs_recovery_and_reads_run_off_the_trio_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, bool]] = []

    def spy(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def watched(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, threading.current_thread() is threading.main_thread()))
            return real(*args, **kwargs)

        return watched

    monkeypatch.setattr(queue_mod, "_write_all", spy("write", queue_mod._write_all))
    monkeypatch.setattr(queue_mod, "_fdatasync", spy("fdatasync", queue_mod._fdatasync))
    monkeypatch.setattr(queue_mod, "recover", spy("recover", queue_mod.recover))
    monkeypatch.setattr(os, "fsync", spy("fsync", os.fsync))
    monkeypatch.setattr(os, "pread", spy("pread", os.pread))
    directory = tmp_path / "q"
    with trio.fail_after(60):  # a hang guard: real files, real time
        async with open_queue(directory, max_segment_size=256) as q:
            for i in range(20):  # more than one segment: rolls and trims too
                await q.append(b"record %02d" % i)
            for _ in range(10):
                assert await q.current() is not None
                await q.advance()
        tear_tail(directory)
        async with open_queue(directory) as q:
            assert q.recovery.truncated  # the open repaired the tail (in its thread)
            got = []
            while (data := await q.current()) is not None:
                got.append(data)
                await q.advance()
    assert got == [b"record %02d" % i for i in range(10, 20)]
    assert {name for name, _ in calls} >= {"write", "fsync", "recover", "pread"}
    on_loop = sorted({name for name, main in calls if main})
    assert on_loop == [], f"blocking calls on the Trio thread: {on_loop}"
