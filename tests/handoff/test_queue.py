"""DiskBackedQueue: the reference's queue tests ported, plus format, recovery and sync tests."""

from __future__ import annotations

import errno
import math
import os
import random
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from trioprobe.handoff import (
    QueueCloseTimeoutError,
    QueueFullError,
    QueueIOError,
    QueueLockedError,
    QueueNotOpenError,
    QueueOpenError,
    QueueWriteError,
    SegmentFullError,
    UnsafeQueueDirError,
    _format,
    inspect_queue,
    open_queue,
)
from trioprobe.handoff import disk_queue as queue_mod

HDR = _format.HEADER_SIZE
REC = _format.RECORD_HEADER_SIZE


async def drain(q: queue_mod.DiskBackedQueue) -> list[bytes]:
    out = []
    while (data := await q.current()) is not None:
        out.append(data)
        assert await q.advance()
    return out


def counting(calls: list[int], real: Callable[[int], None]) -> Callable[[int], None]:
    def wrapper(fd: int) -> None:
        calls.append(fd)
        real(fd)

    return wrapper


def segment_files(d: Path) -> list[str]:
    return sorted((p.name for p in d.iterdir() if p.name.isdigit()), key=int)


# -- ported from the reference (metric-store fork / InfluxDB hh queue tests) ------------------
async def test_one_append_creates_segment_1(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d) as q:
        await q.append(b"test")
        assert segment_files(d) == ["1"]
        # Our framing: 16-byte segment header + 16-byte record header + payload.
        assert (d / "1").stat().st_size == HDR + REC + 4
        assert await q.current() == b"test"
        assert q.disk_usage() == HDR + REC + 4


async def test_multiple_appends_come_back_in_order(tmp_path: Path) -> None:
    async with open_queue(tmp_path / "q") as q:
        for i in range(50):
            await q.append(f"rec-{i}".encode())
        assert await drain(q) == [f"rec-{i}".encode() for i in range(50)]
        assert await q.current() is None
        assert not await q.advance()


async def test_head_survives_close_and_open(tmp_path: Path) -> None:
    async with open_queue(tmp_path / "q") as q:
        for word in (b"one", b"two", b"three"):
            await q.append(word)
        await q.advance()
    async with open_queue(tmp_path / "q") as q:
        assert q.recovery.clean
        assert await q.current() == b"two"
        assert q.position().head_offset == HDR + REC + 3


async def test_current_is_none_until_first_write(tmp_path: Path) -> None:
    async with open_queue(tmp_path / "q") as q:
        assert await q.current() is None
        await q.append(b"first")
        assert await q.current() == b"first"


async def test_segment_rollover_and_trim(tmp_path: Path) -> None:
    d = tmp_path / "q"
    # Room for exactly one 4-byte record per segment.
    async with open_queue(d, max_segment_size=HDR + REC + 4) as q:
        await q.append(b"one1")
        await q.append(b"two2")
        assert segment_files(d) == ["1", "2"]
        assert await q.current() == b"one1"
        await q.advance()
        assert segment_files(d) == ["2"]  # the consumed head segment is deleted
        assert await q.current() == b"two2"
        await q.advance()
        assert await q.current() is None


async def test_full_queue(tmp_path: Path) -> None:
    async with open_queue(tmp_path / "q", max_size=HDR + REC + 10) as q:
        await q.append(b"0123456789")
        with pytest.raises(QueueFullError, match="is full"):
            await q.append(b"x")
        assert await drain(q) == [b"0123456789"]


async def test_record_larger_than_a_segment(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d, max_segment_size=100) as q:
        with pytest.raises(SegmentFullError, match="does not fit in a segment of 100 bytes"):
            await q.append(b"x" * 100)
        # Unlike the reference, no empty segment is left behind.
        assert segment_files(d) == ["1"]
        await q.append(b"x" * (100 - HDR - REC))
        assert await q.current() == b"x" * (100 - HDR - REC)


async def test_reopen_keeps_everything(tmp_path: Path) -> None:
    for round_ in range(3):
        async with open_queue(tmp_path / "q", max_segment_size=256) as q:
            for i in range(20):
                await q.append(f"{round_}-{i}".encode())
    async with open_queue(tmp_path / "q") as q:
        got = await drain(q)
    assert got == [f"{r}-{i}".encode() for r in range(3) for i in range(20)]


async def test_corrupt_tail_is_truncated_not_deleted(tmp_path: Path) -> None:
    """The reference test sets the footer to 0x63 and loses segment 1; we keep what is good."""
    d = tmp_path / "q"
    async with open_queue(d) as q:
        for word in (b"one", b"two", b"three"):
            await q.append(word)
    path = d / "1"
    data = bytearray(path.read_bytes())
    data[-8:] = b"\x63" * 8  # inside the last record's payload+header: corrupt tail
    path.write_bytes(bytes(data))
    async with open_queue(d) as q:
        rec = q.recovery
        assert [t.segment for t in rec.truncated] == [1]
        assert rec.truncated[0].offset == HDR + 2 * REC + 6
        assert await drain(q) == [b"one", b"two"]
        await q.append(b"four")
    async with open_queue(d) as q:
        assert q.recovery.clean
        assert await drain(q) == [b"four"]


async def test_torn_append_is_truncated(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d) as q:
        await q.append(b"kept")
    record = _format.encode_record(b"torn-record", 1)
    path = d / "1"
    path.write_bytes(path.read_bytes() + record[: len(record) // 2])
    async with open_queue(d) as q:
        assert q.recovery.truncated[0].dropped == len(record) // 2
        assert await drain(q) == [b"kept"]


async def test_corrupt_middle_record_is_skipped_and_counted(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d) as q:
        for word in (b"alpha", b"bravo", b"charlie"):
            await q.append(word)
    path = d / "1"
    data = bytearray(path.read_bytes())
    data[HDR + REC + 5 + REC + 2] ^= 0xFF  # one byte of "bravo"
    path.write_bytes(bytes(data))
    async with open_queue(d) as q:
        assert q.recovery.corrupt_records == 1
        assert not q.recovery.truncated
        assert await drain(q) == [b"alpha", b"charlie"]
    assert inspect_queue(d).segments[0].corrupt == 1


async def test_corrupt_length_in_middle_is_skipped(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d) as q:
        for word in (b"alpha", b"bravo", b"charlie"):
            await q.append(word)
    path = d / "1"
    data = bytearray(path.read_bytes())
    data[HDR + REC + 5 + 4] = 0x7F  # bravo's length becomes huge
    path.write_bytes(bytes(data))
    async with open_queue(d) as q:
        assert q.recovery.corrupt_records == 1
        assert await drain(q) == [b"alpha", b"charlie"]


async def test_corruption_in_sealed_segment_found_on_read(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d, max_segment_size=HDR + 3 * (REC + 5)) as q:
        for i in range(6):
            await q.append(f"rec-{i}".encode())
    assert segment_files(d) == ["1", "2"]
    path = d / "1"
    data = bytearray(path.read_bytes())
    data[HDR + REC + 5 + REC] ^= 0x01  # first payload byte of rec-1
    path.write_bytes(bytes(data))
    async with open_queue(d) as q:
        assert q.recovery.clean  # only the tail is scanned on open
        assert await drain(q) == [b"rec-0", b"rec-2", b"rec-3", b"rec-4", b"rec-5"]
        assert q.corrupt_records == 1
    assert segment_files(d) == ["2"]  # the read-through segment was trimmed as usual
    # Put the damaged segment back: verify=True finds the damage on open.
    path.write_bytes(bytes(data))
    (d / "head").unlink()
    async with open_queue(d, verify=True) as q:
        assert q.recovery.corrupt_records == 1
        assert len(await drain(q)) == 5


async def test_corrupt_mib_in_a_middle_segment_is_skipped_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A MiB of garbage in a sealed segment: the records after it are still read, the skip is
    counted, and the resynchronising search runs in a worker thread and tries only the few
    offsets that can hold a record (it used to parse every offset on the Trio thread: ~1.6 s
    per MiB with the event loop held)."""
    d = tmp_path / "q"
    big = 1 << 20
    async with open_queue(d, max_segment_size=4 * big) as q:
        await q.append(b"before")
        await q.append(b"x" * big)
        await q.append(b"after")
        q.set_max_segment_size(HDR + REC + 8)
        await q.append(b"tail-rec")  # rolls: segment 1 is sealed, 2 is the tail
        assert q.segment_ids() == [1, 2]
    path = d / "1"
    data = bytearray(path.read_bytes())
    start = HDR + REC + len(b"before")
    data[start : start + REC + big] = random.Random(5).randbytes(REC + big)
    path.write_bytes(bytes(data))

    calls: list[bool] = []  # per resync call: did it run on the Trio thread?
    parses = [0]
    real_resync, real_parse = queue_mod.resync, _format.parse_record

    def on_trio_thread() -> bool:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            return False
        return True

    def watched_resync(buf: bytes, off: int, max_len: int) -> int | None:
        calls.append(on_trio_thread())
        return real_resync(buf, off, max_len)

    def counted_parse(buf: bytes, off: int, max_len: int) -> tuple[_format.Parse, int, int]:
        parses[0] += 1
        return real_parse(buf, off, max_len)

    monkeypatch.setattr(queue_mod, "resync", watched_resync)
    monkeypatch.setattr(_format, "parse_record", counted_parse)
    async with open_queue(d) as q:
        assert await drain(q) == [b"before", b"after", b"tail-rec"]
        assert q.corrupt_records == 1
    assert calls == [False]  # one resync, in a worker thread
    # Random bytes have a zero top length byte at 1 offset in 256: ~4,100 candidates, not 1 Mi.
    assert parses[0] < big // 64


async def test_verify_scans_every_segment(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d, max_segment_size=HDR + 3 * (REC + 5)) as q:
        for i in range(6):
            await q.append(f"rec-{i}".encode())
    path = d / "1"
    data = bytearray(path.read_bytes())
    data[HDR + REC + 5 + REC] ^= 0x01
    path.write_bytes(bytes(data))
    async with open_queue(d, verify=True) as q:
        assert q.recovery.corrupt_records == 1
        assert len(await drain(q)) == 5


async def test_bad_header_byte_keeps_the_segment(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d) as q:
        await q.append(b"survivor")
    path = d / "1"
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    async with open_queue(d) as q:
        assert q.recovery.bad_headers[0][0] == 1
        assert await drain(q) == [b"survivor"]
    assert segment_files(d) == ["1"]


async def test_segments_are_read_in_numeric_order(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d, max_segment_size=HDR + REC + 2) as q:
        for i in range(12):
            await q.append(f"{i:02d}".encode())
    assert "10" in segment_files(d)  # lexicographic order would put 10 before 2
    async with open_queue(d) as q:
        assert await drain(q) == [f"{i:02d}".encode() for i in range(12)]


async def test_unknown_files_are_ignored(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d) as q:
        await q.append(b"x")
    (d / "notes.txt").write_text("hello")
    (d / "007").write_text("not a segment name")
    async with open_queue(d) as q:
        assert await drain(q) == [b"x"]


async def test_purge_older_than_uses_record_times(tmp_path: Path) -> None:
    now = [1000.0]
    async with open_queue(tmp_path / "q", wall_clock=lambda: now[0]) as q:
        await q.append(b"old")
        now[0] = 2000.0
        await q.append(b"new")
        assert await q.purge_older_than(1500.0) == 1
        assert await q.current() == b"new"
        assert await q.purge_older_than(1500.0) == 0
        assert await q.purge_older_than(2000.5) == 1
        assert await q.current() is None


async def test_purging_everything_reclaims_the_tail(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d, wall_clock=lambda: 10.0) as q:
        for _ in range(10):
            await q.append(b"x" * 100)
        assert await q.purge_older_than(11.0) == 10
        assert segment_files(d) == ["2"]
        assert q.disk_usage() == HDR
        await q.append(b"after")
        assert await drain(q) == [b"after"]


async def test_not_open_errors_and_remove(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d) as q:
        with pytest.raises(QueueOpenError, match="is open"):
            q.remove()
    with pytest.raises(QueueNotOpenError, match="not open"):
        await q.append(b"late")
    with pytest.raises(QueueNotOpenError):
        await q.current()
    with pytest.raises(QueueNotOpenError):
        await q.advance()
    q.remove()
    assert not d.exists()


async def test_directory_mode_and_lock(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d) as q:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        assert stat.S_IMODE((d / "1").stat().st_mode) == 0o600
        with pytest.raises(QueueLockedError, match="already open"):
            async with open_queue(d):
                pass
        await q.append(b"still fine")


async def test_position_usage_last_modified(tmp_path: Path) -> None:
    async with open_queue(tmp_path / "q", max_segment_size=1000) as q:
        await q.append(b"abc")
        pos = q.position()
        assert (pos.head_segment, pos.head_offset) == (1, HDR)
        assert (pos.tail_segment, pos.tail_offset) == (1, HDR + REC + 3)
        assert str(pos) == f"head=1:{HDR} tail=1:{HDR + REC + 3}"
        assert q.last_modified() > 0
        q.set_max_segment_size(HDR + REC + 3)
        await q.append(b"def")  # the tail is full at the new size: a new segment
        assert q.position().tail_segment == 2
        assert q.disk_usage() == 2 * (HDR + REC + 3)
        with pytest.raises(ValueError, match="too small"):
            q.set_max_segment_size(10)


async def test_group_commit_batches_concurrent_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[int] = []
    real = queue_mod._fdatasync
    monkeypatch.setattr(queue_mod, "_fdatasync", counting(syncs, real))
    called: list[bytes] = []

    async def append(q: queue_mod.DiskBackedQueue, data: bytes) -> None:
        called.append(data)  # append() queues the record before its first checkpoint
        await q.append(data)

    async with open_queue(tmp_path / "q", sync="group") as q:
        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(append, q, f"{i:03d}".encode())
        got = await drain(q)
    # Records land in the order append() was called (trio starts tasks in any order).
    assert got == called
    assert sorted(got) == [f"{i:03d}".encode() for i in range(100)]
    # Far fewer fsyncs than records (the first append writes alone, the rest share).
    assert 1 <= len(syncs) <= 5


@pytest.mark.parametrize("split", [False, True])
async def test_no_append_returns_before_its_record_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: bool
) -> None:
    """Both batching modes (one batch per round, or two groups taking turns so one group's
    appends overlap the other's fsync) acknowledge a record only after an fsync covered it."""
    lock = threading.Lock()
    written: list[bytes] = []
    durable: set[bytes] = set()
    batches: list[int] = []
    real_write, real_sync = queue_mod._write_all, queue_mod._fdatasync

    def write(fd: int, data: bytes) -> None:
        real_write(fd, data)
        with lock:
            written.append(data)

    def sync(fd: int) -> None:
        real_sync(fd)
        with lock:
            chunk = b"".join(written)
            written.clear()
            batches.append(chunk.count(b"rec-"))
            durable.update(w for w in chunk.split(b"|") if w.startswith(b"rec-"))

    async with open_queue(tmp_path / "q") as q:
        monkeypatch.setattr(queue_mod, "_write_all", write)
        monkeypatch.setattr(queue_mod, "_fdatasync", sync)
        q._commit.chooser.split = split  # the chooser switches only after 32 batches
        late: list[bytes] = []

        async def appender(k: int) -> None:
            for i in range(4):
                data = b"|rec-%d-%d|" % (k, i)
                await q.append(data)
                if data.strip(b"|") not in durable:
                    late.append(data)

        async with trio.open_nursery() as nursery:
            for k in range(100):
                nursery.start_soon(appender, k)
        assert late == []
        assert sum(batches) == 400
        if split:  # two groups of at most half the appenders each
            assert max(batches) <= 50
            assert len(batches) >= 8
        else:
            assert len(batches) <= 8
        assert len(await drain(q)) == 400


def test_a_closed_queue_object_opens_again_even_in_another_run(tmp_path: Path) -> None:
    q = queue_mod.DiskBackedQueue(tmp_path / "q")

    async def session(data: bytes) -> None:
        await q.open()
        try:
            with trio.fail_after(30):  # a hang guard: real files, real time
                await q.append(data)
                await q.append_many([data + b"+"])
        finally:
            await q.aclose()

    trio.run(session, b"first")
    trio.run(session, b"second")  # a new event loop: the old one's token is gone

    async def read() -> list[bytes]:
        async with open_queue(tmp_path / "q") as q2:
            return await drain(q2)

    assert trio.run(read) == [b"first", b"first+", b"second", b"second+"]


async def test_record_sync_fsyncs_every_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[int] = []
    real = queue_mod._fdatasync
    monkeypatch.setattr(queue_mod, "_fdatasync", counting(syncs, real))
    async with open_queue(tmp_path / "q", sync="record") as q:
        syncs.clear()  # opening a fresh queue writes its head file
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(q.append, b"r%d" % i)
        assert len(syncs) == 20
        assert len(await drain(q)) == 20


async def test_write_error_fails_the_batch_and_leaves_no_garbage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "q"
    async with open_queue(d) as q:
        await q.append(b"good")
        real = queue_mod._write_all

        def half_then_fail(fd: int, data: bytes) -> None:
            real(fd, data[: len(data) // 2])
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(queue_mod, "_write_all", half_then_fail)
        with pytest.raises(QueueWriteError, match="No space left"):
            await q.append(b"lost-record")
        monkeypatch.setattr(queue_mod, "_write_all", real)
        await q.append(b"after")
        assert await drain(q) == [b"good", b"after"]
    async with open_queue(d) as q:
        assert q.recovery.clean


async def test_damaged_head_file_rereads_from_start(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d) as q:
        for word in (b"a", b"b"):
            await q.append(word)
        await q.advance()
    (d / "head").write_bytes(b"garbage")
    async with open_queue(d) as q:
        assert "head file" in (q.recovery.head_note or "")
        # At least once: the consumed record comes back rather than anything being lost.
        assert await drain(q) == [b"a", b"b"]


async def test_head_off_record_boundary_moves_forward(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d) as q:
        for word in (b"aaaa", b"bbbb"):
            await q.append(word)
    (d / "head").write_bytes(_format.encode_head(1, HDR + 3))
    async with open_queue(d) as q:
        assert "not a record boundary" in (q.recovery.head_note or "")
        assert await drain(q) == [b"bbbb"]


async def test_crash_between_head_persist_and_unlink(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d, max_segment_size=HDR + REC + 1) as q:
        for word in (b"a", b"b"):
            await q.append(word)
    (d / "head").write_bytes(_format.encode_head(2, HDR))  # as if trimming stopped halfway
    async with open_queue(d) as q:
        assert q.recovery.removed_segments == (1,)
        assert await drain(q) == [b"b"]


async def test_cancelled_close_still_persists_head(tmp_path: Path) -> None:
    d = tmp_path / "q"
    with trio.CancelScope() as scope:
        async with open_queue(d) as q:
            await q.append(b"x")
            await q.append(b"y")
            await q.advance()
            scope.cancel()
            await trio.sleep_forever()
    async with open_queue(d) as q:
        assert await drain(q) == [b"y"]


def test_segment_file_layout(tmp_path: Path) -> None:
    """The documented byte layout (docs/handoff-format.md) is what is written."""
    header = _format.encode_segment_header()
    assert header[:8] == b"TPHQSEG\x00"
    assert header[8:10] == b"\x00\x01"
    rec = _format.encode_record(b"hi", 0x0102030405060708)
    assert rec[4:8] == b"\x00\x00\x00\x02"
    assert rec[8:16] == bytes(range(1, 9))
    assert rec[16:] == b"hi"
    assert int.from_bytes(rec[:4], "big") == _format.crc32c(rec[4:])
    assert _format.crc32c(b"123456789") == 0xE3069283  # it is CRC32C, not zlib's CRC32
    head = _format.encode_head(7, 99)
    assert len(head) == 32
    assert _format.decode_head(head) == (7, 99)
    assert os.path.basename(_format.HEAD_FILE) == "head"


async def test_append_many_is_one_batch_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[int] = []
    real = queue_mod._fdatasync
    monkeypatch.setattr(queue_mod, "_fdatasync", counting(syncs, real))
    async with open_queue(tmp_path / "q", max_size=HDR + 3 * (REC + 1)) as q:
        syncs.clear()
        await q.append_many([b"a", b"b"])
        assert len(syncs) == 1
        with pytest.raises(QueueFullError, match=r"2 record\(s\)"):
            await q.append_many([b"c", b"d"])  # all or nothing: neither is written
        with pytest.raises(SegmentFullError):
            await q.append_many([b"e", b"x" * 10**9])
        await q.append_many([b"c"])
        assert await drain(q) == [b"a", b"b", b"c"]


async def test_cancelled_appenders_never_stall_the_others(tmp_path: Path) -> None:
    """Cancel random appenders while batches are in flight: the lead passes on, nothing hangs,
    and every append that returned is stored, in call order."""
    rng = random.Random(7)
    done: list[bytes] = []
    async with open_queue(tmp_path / "q") as q:

        async def appender(k: int) -> None:
            for i in range(20):
                data = b"%d-%d" % (k, i)
                with trio.move_on_after(rng.choice([0, 0.0005, 0.002, 1])):
                    await q.append(data)
                    done.append(data)

        with trio.fail_after(120):  # a hang guard, not a speed test
            async with trio.open_nursery() as nursery:
                for k in range(30):
                    nursery.start_soon(appender, k)
            await q.append(b"last")  # the queue still works
        got = await drain(q)
    assert got[-1] == b"last"
    assert set(done) <= set(got)
    # Per appender, records are stored in the order they were appended.
    for k in range(30):
        mine = [g for g in got if g.startswith(b"%d-" % k)]
        assert mine == sorted(mine, key=lambda g: int(g.split(b"-")[1]))


async def waiters(lock: trio.Lock, n: int) -> None:
    """Wait (in real time) until ``n`` tasks are queued on ``lock``."""
    while lock.statistics().tasks_waiting < n:  # noqa: ASYNC110
        await trio.sleep(0.001)


# -- review fixes ------------------------------------------------------------------------------
async def test_purge_racing_appends_that_roll_keeps_unread_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # purge_older_than empties the queue, then waits for the write in flight to roll the tail.
    # That write appends to segment 1 and rolls to segment 2, so segment 1 holds unread
    # records again: purge must not trim it.
    now = [0.0]
    seg = HDR + (REC + 3) + 2 * (REC + 1)  # "old" plus two 1-byte records fill segment 1
    async with open_queue(tmp_path / "q", max_segment_size=seg, wall_clock=lambda: now[0]) as q:
        await q.append(b"old")
        now[0] = 100.0
        entered, release = threading.Event(), threading.Event()
        real = queue_mod._write_all

        def held_write(fd: int, data: bytes) -> None:
            entered.set()
            release.wait(30)
            real(fd, data)

        monkeypatch.setattr(queue_mod, "_write_all", held_write)
        purged: list[int] = []

        async def purge() -> None:
            purged.append(await q.purge_older_than(50.0))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(q.append_many, [b"x", b"y", b"z"])
                await trio.to_thread.run_sync(entered.wait)  # the write is in flight
                nursery.start_soon(purge)
                while q._commit._idle.statistics().tasks_waiting < 1:  # noqa: ASYNC110
                    await trio.sleep(0.001)  # purge waits for the write in flight
                release.set()
        assert purged == [1]
        assert q.segment_ids() == [1, 2]
        assert await drain(q) == [b"x", b"y", b"z"]


async def test_cancel_while_trimming_leaves_list_files_and_usage_consistent(
    tmp_path: Path,
) -> None:
    # The cancel arrives after advance() got the reader lock for the trim but before its
    # thread hop (trio.to_thread.run_sync raises Cancelled at once if a cancel is pending).
    d = tmp_path / "q"
    async with open_queue(d, max_segment_size=HDR + REC + 1) as q:
        await q.append(b"a")
        await q.append(b"b")  # segment 2
        assert await q.current() == b"a"
        scope = trio.CancelScope()

        async def advance() -> None:
            with scope:
                await q.advance()

        async with trio.open_nursery() as nursery:
            await q._io_lock.acquire()
            nursery.start_soon(advance)
            await waiters(q._io_lock, 1)
            q._io_lock.release()  # hands the lock to advance(), which has not run yet
            scope.cancel()
        assert q.segment_ids() == [2]
        assert segment_files(d) == ["2"]  # segment 1 left the list, so it must be unlinked
        assert q.disk_usage() == (d / "2").stat().st_size
        assert await drain(q) == [b"b"]


def test_sync_policy_is_exported() -> None:
    import trioprobe.handoff

    assert "SyncPolicy" in queue_mod.__all__
    assert "SyncPolicy" in trioprobe.handoff.__all__
    assert trioprobe.handoff.SyncPolicy is queue_mod.SyncPolicy


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
async def test_refuses_an_existing_directory_others_may_write(tmp_path: Path, mode: int) -> None:
    d = tmp_path / "q"
    d.mkdir()
    d.chmod(mode)
    with pytest.raises(UnsafeQueueDirError, match="writable by group or others"):
        async with open_queue(d):
            pass
    assert list(d.iterdir()) == []  # refused before creating anything
    d.chmod(0o755)  # others may read, not write: accepted
    async with open_queue(d) as q:
        await q.append(b"ok")


async def test_refuses_a_directory_another_user_owns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "q"
    d.mkdir(mode=0o700)
    monkeypatch.setattr(queue_mod.os, "getuid", lambda: os.stat(d).st_uid + 1)
    with pytest.raises(UnsafeQueueDirError, match="owned by uid"):
        async with open_queue(d):
            pass


def fail_nth_sync(n: int, real: Callable[[int], None]) -> Callable[[int], None]:
    calls = [0]

    def sync(fd: int) -> None:
        calls[0] += 1
        if calls[0] == n:
            raise OSError(5, "Input/output error")
        real(fd)

    return sync


async def test_records_fsynced_before_a_failure_in_the_batch_are_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One byte records, one per segment: the batch is fsynced chunk by chunk at each roll,
    # and the second fsync fails. The first record is durable, so its append must succeed.
    async with open_queue(tmp_path / "q", max_segment_size=HDR + REC + 1) as q:
        monkeypatch.setattr(queue_mod, "_fdatasync", fail_nth_sync(2, queue_mod._fdatasync))
        ok: list[bytes] = []
        failed: list[QueueWriteError] = []

        async def append(data: bytes) -> None:
            try:
                await q.append(data)
            except QueueWriteError as exc:
                failed.append(exc)
            else:
                ok.append(data)

        async with trio.open_nursery() as nursery:
            for data in (b"a", b"b", b"c"):
                nursery.start_soon(append, data)
        assert len(ok) == 1  # one batch of three: the first chunk stored, then the failure
        assert len(failed) == 2
        assert all(exc.stored == 0 for exc in failed)
        assert failed[0] is not failed[1]  # each task raises its own exception
        assert await drain(q) == ok


async def test_append_many_write_error_says_how_many_were_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_queue(tmp_path / "q", max_segment_size=HDR + REC + 1) as q:
        monkeypatch.setattr(queue_mod, "_fdatasync", fail_nth_sync(2, queue_mod._fdatasync))
        with pytest.raises(QueueWriteError, match="first 1 of these 3 records") as exc:
            await q.append_many([b"a", b"b", b"c"])
        assert exc.value.stored == 1
        assert await drain(q) == [b"a"]


async def test_inspect_and_open_agree_on_a_head_off_a_record_boundary(tmp_path: Path) -> None:
    d = tmp_path / "q"
    async with open_queue(d) as q:
        for word in (b"aaaa", b"bbbb", b"cccc"):
            await q.append(word)
    (d / "head").write_bytes(_format.encode_head(1, HDR + 3))
    info = inspect_queue(d)
    # Offline inspection makes the queue's own correction: the head moves to the next record.
    assert (info.head_segment, info.head_offset) == (1, HDR + REC + 4)
    assert "not a record boundary" in (info.head_note or "")
    assert info.pending == 2
    async with open_queue(d) as q:
        assert q.recovery.head_note == info.head_note
        assert q.position().head_offset == info.head_offset
        assert await drain(q) == [b"bbbb", b"cccc"]


# -- disk full outside appends, and a bounded close (issue 12, item 7) ------------------------
def full_disk_for(monkeypatch: pytest.MonkeyPatch, magic: bytes) -> list[int]:
    """Make every write of a file starting with ``magic`` (a segment header or the head
    file) fail with ENOSPC, as a full disk does; returns the list of failures."""
    real = queue_mod._write_all
    failures: list[int] = []

    def write_all(fd: int, data: bytes) -> None:
        if data.startswith(magic):
            failures.append(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(queue_mod, "_write_all", write_all)
    return failures


async def test_disk_full_on_open_is_a_queue_error_naming_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "q"
    failures = full_disk_for(monkeypatch, _format.SEGMENT_MAGIC)
    with pytest.raises(QueueIOError, match=f"opening queue {d} failed: .*No space") as exc:
        async with open_queue(d):
            pass
    assert failures
    assert exc.value.errno == errno.ENOSPC
    assert isinstance(exc.value.__cause__, OSError)
    monkeypatch.undo()
    async with open_queue(d) as q:  # the lock was released; space is back
        await q.append(b"ok")
        assert await drain(q) == [b"ok"]


async def test_disk_full_on_the_head_file_is_a_queue_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "q"
    q = queue_mod.DiskBackedQueue(d)
    await q.open()
    for i in range(3):
        await q.append(b"r%d" % i)
    assert await q.advance()
    full_disk_for(monkeypatch, _format.HEAD_MAGIC)
    with pytest.raises(QueueIOError, match=f"saving the head position of queue {d} failed"):
        await q.sync_head()
    with pytest.raises(QueueIOError, match=f"closing queue {d} failed") as exc:
        await q.aclose()
    assert exc.value.errno == errno.ENOSPC
    assert not q.is_open
    monkeypatch.undo()
    async with open_queue(d) as q2:  # the lock was released; nothing was lost
        assert await drain(q2) == [b"r0", b"r1", b"r2"]  # head not saved: r0 again


async def test_close_is_bounded_when_a_write_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    """A hung fsync used to hold aclose (shielded) forever. Now it gives up after close_timeout
    (virtual seconds here) and the hung writer releases the files when it returns."""
    d = tmp_path / "q"
    entered, release = threading.Event(), threading.Event()
    real = queue_mod._fdatasync

    def hung_fsync(fd: int) -> None:
        entered.set()
        release.wait(60)
        real(fd)

    appended: list[object] = []
    async with trio.open_nursery() as nursery:
        q = queue_mod.DiskBackedQueue(d, queue_mod.QueueOptions(close_timeout=5.0))
        await q.open()
        monkeypatch.setattr(queue_mod, "_fdatasync", hung_fsync)

        async def append() -> None:
            await q.append(b"in flight")
            appended.append(trio.current_time())

        nursery.start_soon(append)
        await trio.to_thread.run_sync(entered.wait)
        start = trio.current_time()
        with pytest.raises(QueueCloseTimeoutError, match=f"closing queue {d} did not finish"):
            await q.aclose()
        assert trio.current_time() - start == pytest.approx(5.0)
        assert not q.is_open
        with pytest.raises(QueueNotOpenError):
            await q.append(b"refused")
        with pytest.raises(QueueLockedError):  # the hung writer still holds the files
            await queue_mod.DiskBackedQueue(d).open()
        release.set()
    assert appended  # the record in flight was stored and acknowledged
    monkeypatch.undo()
    # Released by the writer once its fsync returned. (No close bound here: under autojump a
    # bound in Trio time would trip while the close's worker thread runs.)
    async with open_queue(d, close_timeout=math.inf) as q2:
        assert await drain(q2) == [b"in flight"]
