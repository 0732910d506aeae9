"""No targets file is read or parsed on the Trio thread: a 4 MiB file rewritten every 100 ms
beside 1,000 probed targets. The verdict is deterministic (which thread each read and parse ran
in); the event-loop lag the runner measured is printed beside it, not asserted (it depends on
how busy the machine is)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trioprobe.targets._parse as parse_module
import trioprobe.targets.files as files_module
from trioprobe.config import parse_config
from trioprobe.probes import probe_types
from trioprobe.runner import Runner
from trioprobe.targets import MAX_TARGETS_BYTES


@pytest.fixture(autouse=True)
def _fake_type() -> Iterator[None]:
    with probe_types.registered("fake", "tests.core.fake_probe"):
        yield


def _big_file(generation: int) -> bytes:
    """~4 MiB: 1,000 targets (one renamed each generation) and comment padding."""
    lines = [f"t{i}-{generation if i == 0 else 0}.example:80\n" for i in range(1000)]
    text = "".join(lines).encode()
    pad = b"# " + b"x" * 1000 + b"\n"
    count = (MAX_TARGETS_BYTES - 4096 - len(text)) // len(pad)
    return text + pad * count


def _rewrite(path: Path, stop: threading.Event) -> int:
    generation = 0
    while not stop.is_set() and generation < 600:  # bounded: at most 60 s of rewrites
        generation += 1
        with path.open("wb") as file:  # in place, as the reproduction did
            file.write(_big_file(generation))
        time.sleep(0.1)
    return generation


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] if len(samples) > 2 else 0.0


async def _run(
    path: Path | None, seconds: float, until: Callable[[], bool] = lambda: True
) -> tuple[list[float], int]:
    probes: list[dict[str, Any]] = [
        {
            "name": "many",
            "type": "fake",
            "targets": [f"m{i}" for i in range(1000)],
            "interval": 1.0,
            "stats_interval": 2.0,
        }
    ]
    if path is not None:
        probes.append({"name": "file", "type": "fake", "targets_file": str(path), "interval": 1.0})
    lags: list[float] = []
    runner = Runner(parse_config({"probe": probes}), on_loop_lag=lags.append)
    stop = threading.Event()
    writes = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)

        async def writer() -> None:
            nonlocal writes
            if path is not None:
                writes = await trio.to_thread.run_sync(_rewrite, path, stop)

        nursery.start_soon(writer)
        await trio.sleep(seconds)
        # However busy the machine, go on until enough reads were seen (bounded below).
        with trio.fail_after(60):
            while not until():  # noqa: ASYNC110 - the watcher's reads happen in threads
                await trio.sleep(0.1)
        stop.set()
        runner.shutdown()
    return lags, writes


async def test_targets_file_is_read_and_parsed_off_the_trio_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trio_thread = threading.get_ident()
    where: list[tuple[str, bool]] = []

    def recording(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            where.append((name, threading.get_ident() == trio_thread))
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(files_module, "read_regular", recording("read", files_module.read_regular))
    monkeypatch.setattr(
        files_module, "parse_target_lines", recording("parse", parse_module.parse_target_lines)
    )
    path = tmp_path / "targets.txt"
    content = _big_file(0)
    assert len(content) > 4_000_000
    path.write_bytes(content)
    quiet_lags, _ = await _run(None, 4.0)
    where.clear()  # the start-up read (before the run, by design) is not what is measured
    lags, writes = await _run(path, 4.0, lambda: sum(n == "read" for n, _ in where) >= 3)
    reads = [name for name, _ in where if name == "read"]
    on_trio_thread = [name for name, on_loop in where if on_loop]
    # The runner built above read the file once at construction (start-up, documented).
    assert on_trio_thread.count("read") <= 1
    assert len(reads) >= 3, where  # one per poll (every second) that saw the file changed
    assert writes >= 1
    assert on_trio_thread.count("read") + on_trio_thread.count("parse") <= 2
    with capsys.disabled():
        print(
            f"\nloop lag p99 with a 4 MiB targets file rewritten every 100 ms beside 1,000 "
            f"targets: {_p99(lags) * 1e3:.2f} ms ({len(reads)} reads of {writes} rewrites, "
            f"all in worker threads); without the file: {_p99(quiet_lags) * 1e3:.2f} ms"
        )
