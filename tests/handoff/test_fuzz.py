"""Hypothesis fuzzing of queue files: random corruption never hangs and never makes the queue
raise (it repairs what it can on open), never returns a record that was not written (in the
order written), and never loses a record its files still hold: the queue returns exactly what
the offline reader finds intact."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trioprobe.handoff import inspect_queue, iter_records, open_queue

PAYLOADS = [b"record-%03d-" % i + b"x" * (i * 7 % 90) for i in range(40)]


@pytest.fixture(scope="module")
def pristine() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="hh-fuzz-"))

    async def build() -> None:
        async with open_queue(base / "q", max_segment_size=1024) as q:
            for p in PAYLOADS:
                await q.append(p)

    trio.run(build)
    yield base / "q"
    shutil.rmtree(base)


mutation = st.tuples(
    st.sampled_from(["flip", "overwrite", "truncate", "append", "zero", "delete"]),
    st.integers(min_value=0, max_value=10),  # which file
    st.floats(min_value=0, max_value=1),  # where
    st.binary(min_size=1, max_size=64),  # bytes / length
)


def mutate(directory: Path, muts: list[tuple[str, int, float, bytes]]) -> None:
    files = sorted(p for p in directory.iterdir() if p.name != "lock")
    for kind, which, where, blob in muts:
        files = [f for f in files if f.exists()]
        if not files:
            return
        path = files[which % len(files)]
        data = bytearray(path.read_bytes())
        pos = int(where * len(data))
        if kind == "flip" and data:
            pos = min(pos, len(data) - 1)
            data[pos] ^= blob[0] or 1
        elif kind == "overwrite":
            data[pos : pos + len(blob)] = blob
        elif kind == "truncate":
            del data[pos:]
        elif kind == "append":
            data += blob
        elif kind == "zero":
            data[pos : pos + len(blob)] = bytes(len(blob))
        elif kind == "delete":
            path.unlink()
            continue
        path.write_bytes(bytes(data))


def is_subsequence(got: list[bytes], full: list[bytes]) -> bool:
    it = iter(full)
    return all(any(x == y for y in it) for x in got)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(muts=st.lists(mutation, min_size=1, max_size=6), verify=st.booleans())
def test_random_corruption_gives_records_or_clear_errors(
    pristine: Path, muts: list[tuple[str, int, float, bytes]], verify: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "q"
        shutil.copytree(pristine, d)
        mutate(d, muts)

        # Offline inspection copes with anything too.
        info = inspect_queue(d)
        assert all(s.size >= 0 for s in info.segments)
        offline = [r.data for r in iter_records(d, all_records=True)]
        assert is_subsequence(offline, PAYLOADS)

        async def read_twice() -> list[bytes]:
            got: list[bytes] = []
            with trio.fail_after(120):  # a hang guard, not a speed test
                async with open_queue(d, verify=verify) as q:
                    for _ in range(len(PAYLOADS) // 2):
                        data = await q.current()
                        if data is None:
                            break
                        got.append(data)
                        await q.advance()
                # Reopen after our own repairs: the rest reads back cleanly.
                async with open_queue(d) as q:
                    assert q.recovery.truncated == ()
                    while (data := await q.current()) is not None:
                        got.append(data)
                        await q.advance()
            return got

        got = trio.run(read_twice)
        assert is_subsequence(got, PAYLOADS), "a record came back that was never written"
        assert got == offline, "the queue lost a record that its files still hold"
        assert os.path.isdir(d)
