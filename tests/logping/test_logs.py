"""MemoryLog, FileLog and the ping encoding."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trioprobe.logping import (
    Disconnector,
    Entry,
    FileLog,
    LogClosedError,
    LogTruncatedError,
    MemoryLog,
)
from trioprobe.logping.encoding import Ping, decode_ping, encode_ping
from trioprobe.logping.logs import prefix_end
from trioprobe.testing import assert_no_leaks


def test_ping_encoding_is_akutans_protobuf_layout() -> None:
    writer = bytes(range(1, 17))
    data = encode_ping(writer, 300)
    # 'P', field 1 (len 16), writer, field 2 varint 300 = 0xac 0x02
    assert data == b"P\x0a\x10" + writer + b"\x10\xac\x02"
    assert decode_ping(data) == Ping(writer, 300)


def test_ping_decoding_rejects_non_pings() -> None:
    assert decode_ping(b"") is None
    assert decode_ping(b"Tsomething") is None
    assert decode_ping(b"P\x0a\x30abc") is None  # length past the end
    # Fields in another order and an unknown field are fine, as in protobuf.
    assert decode_ping(b"P\x10\x05\x1a\x01x\x0a\x02ab") == Ping(b"ab", 5)


def test_prefix_end() -> None:
    assert prefix_end(b"a/") == b"a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff") == b"\x00"


async def collect(log: MemoryLog | FileLog, start: int, n: int) -> list[Entry]:
    out: list[Entry] = []
    async with log.read(start) as entries:
        async for entry in entries:
            out.append(entry)
            if len(out) == n:
                break
    return out


async def test_memory_log_append_and_tail(autojump_clock: trio.abc.Clock) -> None:
    log = MemoryLog()
    assert await log.next_index() == 1
    assert await log.append(b"a") == 1
    assert await log.append(b"b") == 2
    got: list[Entry] = []

    async def reader() -> None:
        got.extend(await collect(log, 2, 3))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(1)
        assert got == []  # still waiting for the tail
        await log.append(b"c")
        await log.append(b"d")
    assert got == [Entry(2, b"b"), Entry(3, b"c"), Entry(4, b"d")]
    assert await log.next_index() == 5


async def test_memory_log_truncation_fails_a_reader_behind_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    log = MemoryLog()
    for i in range(5):
        log.append_nowait(b"%d" % i)
    log.truncate(4)
    assert log.first_index == 4
    with pytest.raises(LogTruncatedError) as info:
        await collect(log, 2, 1)
    assert info.value.requested == 2
    assert info.value.first_available == 4
    assert await collect(log, 4, 2) == [Entry(4, b"3"), Entry(5, b"4")]


async def test_memory_log_truncation_while_reading(autojump_clock: trio.abc.Clock) -> None:
    log = MemoryLog()
    log.append_nowait(b"x")
    errors: list[Exception] = []

    async def reader() -> None:
        try:
            await collect(log, 3, 5)  # waits for entry 3
        except LogTruncatedError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(1)
        assert errors == []
        log.truncate(10)
    assert len(errors) == 1
    assert "entry 3 was discarded" in str(errors[0])


async def test_memory_log_close(autojump_clock: trio.abc.Clock) -> None:
    log = MemoryLog()
    log.close()
    with pytest.raises(LogClosedError):
        await log.append(b"x")
    with pytest.raises(LogClosedError):
        await collect(log, 1, 1)


def test_memory_log_disconnect_counts() -> None:
    log = MemoryLog()
    assert isinstance(log, Disconnector)
    log.disconnect()
    log.disconnect()
    assert log.disconnects == 2


async def test_file_log_round_trip_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = FileLog(path, fsync=False)
    assert await log.next_index() == 1
    assert [await log.append(b"r%d" % i) for i in range(3)] == [1, 2, 3]
    log.close()
    # A torn tail (half a record) is cut off when a writer reopens the file.
    path.write_bytes(path.read_bytes() + b"\x00\x00\x00\x09\x00")
    log2 = FileLog(path, fsync=True)
    assert await log2.append(b"r3") == 4
    with trio.fail_after(120):  # a hang guard, not a speed test
        assert await collect(log2, 2, 3) == [Entry(2, b"r1"), Entry(3, b"r2"), Entry(4, b"r3")]
    log2.close()
    assert path.stat().st_size == 8 + 4 * (8 + 2)


@pytest.mark.parametrize(("fsync", "hops"), [(False, 0), (True, 3)])
async def test_file_log_writes_inline_unless_it_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool, hops: int
) -> None:
    # As FileLog's docstring says: without fsync a record is written on the event loop (a thread
    # hop would cost far more than the write); an fsync always goes to a worker thread.
    log = FileLog(tmp_path / "log", fsync=fsync)
    try:
        assert await log.next_index() == 1  # opening scans the file in a thread
        threaded: list[object] = []
        run_sync = trio.to_thread.run_sync

        async def counting_run_sync(fn: Callable[..., object], *args: object) -> object:
            threaded.append(fn)
            return await run_sync(fn, *args)

        monkeypatch.setattr(trio.to_thread, "run_sync", counting_run_sync)
        assert [await log.append(b"x%d" % i) for i in range(3)] == [1, 2, 3]
        assert len(threaded) == hops
    finally:
        log.close()
    assert [e.data for e in await collect(FileLog(tmp_path / "log"), 1, 3)] == [b"x0", b"x1", b"x2"]


async def test_file_log_tail_follows_appends(tmp_path: Path) -> None:
    writer = FileLog(tmp_path / "log", fsync=False)
    reader = FileLog(tmp_path / "log", poll_interval=10.0)  # must be woken, not polled
    got: list[Entry] = []

    async def read() -> None:
        got.extend(await collect(reader, 1, 2))

    with trio.fail_after(120):  # a hang guard, not a speed test
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()  # the reader waits for a wake-up
            await writer.append(b"one")
            await writer.append(b"two")
    assert got == [Entry(1, b"one"), Entry(2, b"two")]
    writer.close()
    reader.close()


async def test_file_log_close_fails_readers_and_appends(tmp_path: Path) -> None:
    log = FileLog(tmp_path / "log", fsync=False)
    await log.append(b"a")
    log.close()
    with pytest.raises(LogClosedError):
        await log.append(b"b")
    with pytest.raises(LogClosedError):
        await collect(log, 1, 5)


@pytest.mark.parametrize("stage", ["fsync", "open"])
async def test_file_log_close_during_a_threaded_write_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    """close() while a worker thread writes/fsyncs (or opens) must not close the fd under it:
    that gave a raw OSError(EBADF), or a write into whatever file reused the fd number."""
    log = FileLog(tmp_path / "log", fsync=True)
    if stage == "fsync":
        await log.append(b"first")  # opened; the next append only writes and fsyncs
    else:
        other = FileLog(tmp_path / "log", fsync=False)
        await other.append(b"first")  # so opening scans an existing file (and fstats it)
        other.close()
    entered, release = threading.Event(), threading.Event()
    target = "fsync" if stage == "fsync" else "fstat"
    real = getattr(os, target)

    def blocking(fd: int) -> object:
        entered.set()
        release.wait(30)
        return real(fd)

    monkeypatch.setattr(os, target, blocking)
    outcome: list[object] = []

    async def append() -> None:
        try:
            outcome.append(await log.append(b"second"))
        except LogClosedError as exc:
            outcome.append(exc)

    with trio.fail_after(120):  # a hang guard, not a speed test
        async with trio.open_nursery() as nursery:
            nursery.start_soon(append)
            await trio.to_thread.run_sync(entered.wait)
            log.close()
            release.set()
    monkeypatch.undo()
    if stage == "fsync":
        assert outcome == [2]  # the record in flight was written and fsynced
    else:
        assert len(outcome) == 1
        assert isinstance(outcome[0], LogClosedError)
    assert log._fh is None  # closed once the thread was done with it
    with pytest.raises(LogClosedError):
        await log.append(b"third")


async def test_file_log_indexes_count_other_writers_records(tmp_path: Path) -> None:
    """Two writers (as two processes would be) on one file: each append's index is its record's
    true position, so a pinger never sees an index below one it has read (a false rewind)."""
    (tmp_path / "log").touch()
    (tmp_path / "alias").symlink_to(tmp_path / "log")
    one = FileLog(tmp_path / "log", fsync=False)
    two = FileLog(tmp_path / "alias", fsync=True)  # another path: no shared state
    try:
        assert await one.append(b"a") == 1
        assert await two.append(b"b") == 2
        assert await two.append(b"c") == 3
        assert await one.append(b"d") == 4  # was 2: it only counted its own records
        assert await two.next_index() == 5
        assert await one.append(b"e") == 5
        assert await two.next_index() == 6
    finally:
        one.close()
        two.close()
    got = await collect(FileLog(tmp_path / "log"), 1, 5)
    assert got == [Entry(i, d) for i, d in enumerate([b"a", b"b", b"c", b"d", b"e"], 1)]


async def test_file_log_rejects_foreign_file(tmp_path: Path) -> None:
    (tmp_path / "log").write_bytes(b"not a log at all")
    log = FileLog(tmp_path / "log")
    with pytest.raises(Exception, match="not a trioprobe log file"):
        await log.append(b"x")


@given(writer=st.binary(max_size=40), seq=st.integers(min_value=0, max_value=2**64 - 1))
def test_ping_encoding_round_trips(writer: bytes, seq: int) -> None:
    assert decode_ping(encode_ping(writer, seq)) == Ping(writer, seq)


@given(data=st.binary(max_size=60))
def test_ping_decoding_never_raises(data: bytes) -> None:
    decoded = decode_ping(data)
    assert decoded is None or data.startswith(b"P")


async def test_file_log_reader_polls_for_other_writers(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """A writer this process cannot notify (here: the same file under another name, as for a
    writer in another process) is seen by polling every poll_interval (virtual time, so the
    bound below does not depend on how busy the machine is)."""
    (tmp_path / "log").touch()
    (tmp_path / "alias").symlink_to(tmp_path / "log")
    writer = FileLog(tmp_path / "alias", fsync=False)
    reader = FileLog(tmp_path / "log", poll_interval=0.05)
    await writer.append(b"first")
    got: list[tuple[Entry, float]] = []

    async def read() -> None:
        async with reader.read(1) as entries:
            async for entry in entries:
                got.append((entry, trio.current_time()))
                if len(got) == 2:
                    return

    with trio.fail_after(10_000):  # a hang guard only: under autojump, virtual seconds
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            while not got:
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(0.01)
            await trio.sleep(0.2)  # several polls that find nothing new
            appended = trio.current_time()
            await writer.append(b"second")  # inline write (fsync=False): no time passes
    assert [e for e, _ in got] == [Entry(1, b"first"), Entry(2, b"second")]
    assert got[1][1] - appended <= 0.05 + 1e-9  # seen at the next poll, not by a wake-up
    writer.close()
    reader.close()


async def test_read_errors_come_from_the_block_as_themselves(
    autojump_clock: trio.abc.Clock,
) -> None:
    log = MemoryLog()
    await log.append(b"a")
    log.truncate(2)
    with pytest.raises(LogTruncatedError):  # not an ExceptionGroup
        async with log.read(1) as entries:
            await entries.receive()
    with pytest.raises(KeyError):  # the reader's own error, unwrapped too
        async with log.read(2) as entries:
            raise KeyError("mine")


def frame_size(data: bytes) -> int:
    return 8 + len(data)  # u32 length, u32 CRC32C, payload


async def test_file_log_reader_restarts_from_where_the_last_reader_got(tmp_path: Path) -> None:
    """A reader (re)started past what an earlier reader of the file read starts there, instead
    of reading (on the event loop) every record from the file's start again."""
    writer = FileLog(tmp_path / "log", fsync=False)
    reader = FileLog(tmp_path / "log")
    records = [b"record %04d" % i for i in range(1000)]
    with trio.fail_after(60):  # a hang guard, not a speed test
        for data in records:
            await writer.append(data)
        size = (tmp_path / "log").stat().st_size
        got = await collect(reader, 1, 1000)
        assert [e.data for e in got] == records
        assert reader.bytes_read == size
        for restart in range(3):
            await writer.append(b"new %d" % restart)
            before = reader.bytes_read
            assert await collect(reader, 1001 + restart, 1) == [
                Entry(1001 + restart, b"new %d" % restart)
            ]
            assert reader.bytes_read - before == frame_size(b"new %d" % restart)
        # A start before the bookmark still gets every record from there.
        before = reader.bytes_read
        assert [e.index for e in await collect(reader, 500, 504)] == list(range(500, 1004))
        assert reader.bytes_read - before == (tmp_path / "log").stat().st_size
    writer.close()
    reader.close()


async def test_file_log_reader_does_not_trust_a_bookmark_of_a_replaced_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log"
    with trio.fail_after(60):
        first = FileLog(path, fsync=False)
        for data in (b"a", b"b", b"c"):
            await first.append(data)
        assert [e.data for e in await collect(first, 1, 3)] == [b"a", b"b", b"c"]
        first.close()
        path.unlink()
        second = FileLog(path, fsync=False)
        for data in (b"x", b"y", b"z", b"w"):
            await second.append(data)
        # The bookmark says "3 records end at offset N": of another file, so not used.
        assert await collect(second, 4, 1) == [Entry(4, b"w")]
        assert second.bytes_read == path.stat().st_size
        # Rewritten in place (same inode), the record before the bookmark changed: not used.
        assert [e.data for e in await collect(second, 1, 4)] == [b"x", b"y", b"z", b"w"]
        second.close()
        os.truncate(path, 8)
        third = FileLog(path, fsync=False)
        for data in (b"longer record one", b"longer record two", b"three", b"four", b"five"):
            await third.append(data)
        assert await collect(third, 5, 1) == [Entry(5, b"five")]
        third.close()


async def test_file_log_reads_a_large_backlog_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening the file and reading a backlog above INLINE_READ_MAX run in a worker thread; the
    few bytes of a fresh append are read inline (a thread hop would dominate the latency)."""
    from trioprobe.logping.logs import tail

    on_loop: list[tuple[bool, int]] = []
    real_read = tail.Tail._read

    def spy(self: tail.Tail) -> list[tuple[int, bytes]]:
        before = self._pending() if self._fh is not None else -1
        on_loop.append((threading.current_thread() is threading.main_thread(), before))
        return real_read(self)

    monkeypatch.setattr(tail.Tail, "_read", spy)
    monkeypatch.setattr(tail, "READ_MAX", 128 * 1024)
    log = FileLog(tmp_path / "log", fsync=False)
    with trio.fail_after(60):
        for _ in range(4):  # 4 records of 100 kB: more than one READ_MAX in all
            await log.append(b"x" * 100_000)
        got: list[Entry] = []
        async with log.read(1) as entries:
            for _ in range(4):
                got.append(await entries.receive())
            await log.append(b"small")
            got.append(await entries.receive())
    assert [e.index for e in got] == [1, 2, 3, 4, 5]
    assert on_loop[0] == (False, -1)  # the open
    big = [(loop, pending) for loop, pending in on_loop if pending > tail.INLINE_READ_MAX]
    assert big
    assert not any(loop for loop, _ in big)
    assert any(loop and 0 < pending <= tail.INLINE_READ_MAX for loop, pending in on_loop)
    log.close()


async def test_read_leaves_the_callers_exceptions_as_they_were(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The block's error keeps its cause, and a group the caller raises stays that group: only
    the group ``read``'s own nursery made is unwrapped (the ``_groups`` rule, docs/errors.md)."""
    log = MemoryLog()
    await log.append(b"a")
    cause = ValueError("why")
    with pytest.raises(KeyError) as info:
        async with log.read(1):
            raise KeyError("mine") from cause
    assert info.value.__cause__ is cause
    with pytest.raises(ExceptionGroup) as group_info:
        async with log.read(1):
            raise ExceptionGroup("the caller's", [KeyError("one")])
    assert group_info.value.message == "the caller's"
    assert [type(e) for e in group_info.value.exceptions] == [KeyError]


async def test_an_abandoned_read_releases_its_file_and_task_at_once(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """No ``aclosing``: leaving the block (here after one entry) closes the tail's file and ends
    the task that fed the channel, before the block's exit returns."""
    log = FileLog(tmp_path / "log", fsync=False)
    for data in (b"a", b"b", b"c"):
        await log.append(data)
    async with assert_no_leaks(threads=False, settle=0.0), log.read(1) as entries:
        assert await entries.receive() == Entry(1, b"a")
    with pytest.raises(trio.ClosedResourceError):
        entries.receive_nowait()
    log.close()
