"""File sources: FIFOs and devices refused without blocking; rewrites in place never read as a
removal; Prometheus's file_sd shapes; the deprecated TargetsFile keeps its contract."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from trioprobe.cli import main
from trioprobe.config import ConfigError, load_config
from trioprobe.targets import (
    FileSDSource,
    NotRegularFile,
    ProbeTargets,
    SourceError,
    Target,
    TargetsFile,
    TargetsFileSource,
    read_regular,
)

from ._util import wait_for

TEN = "".join(f"http://t{i}.example/\n" for i in range(10))

# The example of Prometheus's documentation (configuration.md, <file_sd_config>).
PROMETHEUS_FILE_SD_JSON = """[
  {
    "targets": ["10.11.150.1:7870", "10.11.150.4:7870"],
    "labels": {
      "job": "mysql"
    }
  },
  {
    "targets": ["10.11.122.11:6001", "10.11.122.15:6002"],
    "labels": {
      "job": "postgres"
    }
  }
]
"""
PROMETHEUS_FILE_SD_YAML = """
- targets:
  - 10.11.150.1:7870
  - 10.11.150.4:7870
  labels:
    job: mysql
- targets:
  - 10.11.122.11:6001
  - 10.11.122.15:6002
  labels:
    job: postgres
"""
EXPECTED = {
    "10.11.150.1:7870": {"job": "mysql"},
    "10.11.150.4:7870": {"job": "mysql"},
    "10.11.122.11:6001": {"job": "postgres"},
    "10.11.122.15:6002": {"job": "postgres"},
}


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "targets.fifo"
    os.mkfifo(path)
    return path


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = _fifo(tmp_path)
    # No writer ever opens it: a plain open() would block here for good.
    with pytest.raises(NotRegularFile, match=r"not a regular file \(a FIFO\)"):
        read_regular(fifo, 1024)
    with pytest.raises(NotRegularFile):
        TargetsFile(fifo)


def test_check_refuses_a_fifo_targets_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fifo(tmp_path)
    config = tmp_path / "probe.toml"
    config.write_text('[[probe]]\nname = "w"\ntype = "http"\ntargets_file = "targets.fifo"\n')
    assert main(["check", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"trioprobe: error: {config}: probe[0].targets_file: cannot read "
        f"{tmp_path / 'targets.fifo'}: not a regular file (a FIFO)\n"
    )


async def test_file_becoming_a_fifo_keeps_targets_and_does_not_block(
    tmp_path: Path, autojump_clock: Any
) -> None:
    path = tmp_path / "targets.txt"
    path.write_text(TEN)
    targets = ProbeTargets("p", [TargetsFileSource(path)])
    targets.preload()
    async with trio.open_nursery() as nursery:
        await nursery.start(targets.run)
        path.unlink()
        os.mkfifo(path)
        state = targets.states[0]
        await wait_for(lambda: state.errors_total >= 3, 1.0)
        assert "not a regular file (a FIFO)" in (state.error or "")
        assert len(targets()) == 10
        nursery.cancel_scope.cancel()  # and cancelling is not held up by an open()


async def _poll(source: TargetsFileSource, targets: ProbeTargets) -> None:
    await source._poll_once(targets.states[0])


async def test_rewrite_in_place_is_never_read_as_removal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "targets.txt"
    path.write_text(TEN)
    source = TargetsFileSource(path)
    targets = ProbeTargets("p", [source])
    targets.preload()
    sizes: list[int] = []
    real_sleep = trio.sleep
    writes: list[str] = []

    async def settle_then_write(seconds: float) -> None:
        # The writer goes on while the source waits to see the file quiet.
        if writes:
            with path.open("a") as file:
                file.write(writes.pop(0))
        await real_sleep(0)

    monkeypatch.setattr(trio, "sleep", settle_then_write)
    # 1. Truncated, the rest written during the settle pause: the empty read is not used.
    path.write_text("")
    writes.append(TEN)
    await _poll(source, targets)
    sizes.append(len(targets()))
    # 2. Half written, the other half during the pause: the partial read is not used.
    path.write_text(TEN[: len(TEN) // 2])
    writes.append(TEN[len(TEN) // 2 :])
    await _poll(source, targets)
    sizes.append(len(targets()))
    assert source.unsettled_reads == 2
    # 3. Truncated and quiet for one poll: not trusted yet; written before the next poll.
    path.write_text("")
    await _poll(source, targets)
    sizes.append(len(targets()))
    path.write_text(TEN.replace("t9", "t99"))
    await _poll(source, targets)
    sizes.append(len(targets()))
    assert "http://t99.example/" in targets()
    assert sizes == [10, 10, 10, 10]
    # 4. Emptied for good (the same empty file at two polls): that is the user's wish.
    path.write_text("# nothing to probe\n")
    await _poll(source, targets)
    assert len(targets()) == 10
    await _poll(source, targets)
    assert targets() == ()


async def test_rewritten_in_place_100_times_a_second(tmp_path: Path) -> None:
    """The issue's reproduction, bounded: 10 targets rewritten in place every 10 ms for 4 s
    while the source polls every 250 ms. No snapshot ever lacks a target.

    An empty file is only believed when two polls in a row find it (the same stamp): a writer
    stalled for a whole poll between its truncate and its write looks exactly like that. The
    poll is long enough that no machine load stalls the writer so long; a shorter one made the
    verdict depend on the load (0 targets seen once under a load average of 16)."""
    path = tmp_path / "targets.txt"
    path.write_text(TEN)
    source = TargetsFileSource(path, poll=0.25, settle=0.01)
    targets = ProbeTargets("p", [source])
    targets.preload()
    smallest = 10

    def rewrite() -> int:
        for _ in range(400):
            with path.open("w") as file:  # truncate, then write: what editors and scripts do
                file.write(TEN)
            time.sleep(0.01)
        return 400

    async def watch() -> None:
        nonlocal smallest
        generation = 0
        while True:
            snapshot = await targets.wait_changed(generation)
            generation = snapshot.generation
            smallest = min(smallest, len(snapshot))

    async with trio.open_nursery() as nursery:
        await nursery.start(targets.run)
        nursery.start_soon(watch)
        writes = await trio.to_thread.run_sync(rewrite)
        nursery.cancel_scope.cancel()
    assert writes == 400
    assert smallest == 10
    assert targets.states[0].errors_total == 0


def test_file_sd_json_and_yaml_as_prometheus_documents_them(tmp_path: Path) -> None:
    for name, text in (("sd.json", PROMETHEUS_FILE_SD_JSON), ("sd.yml", PROMETHEUS_FILE_SD_YAML)):
        path = tmp_path / name
        path.write_text(text)
        targets, bad = FileSDSource(path).preload()
        assert bad == {}
        got = {t.address: {k: v for k, v in t.labels if not k.startswith("__")} for t in targets}
        assert got == EXPECTED
        assert all(dict(t.labels)["__meta_filepath"] == str(path) for t in targets)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ('{"targets": []}', "expected a list of target groups, got an object"),
        ('[{"targets": "a:1"}]', "group 0: `targets` must be a list of strings"),
        ('[{"targets": ["a:1"], "labels": {"0bad": "x"}}]', "'0bad' is not a valid label name"),
        ('[{"targets": ["a:1"], "labels": {"a": 1}}]', "label 'a': expected a string, got int"),
        ('[{"targets": ["a:1"], "lables": {}}]', "group 0: unknown key(s) lables"),
        ("[", "invalid JSON"),
    ],
)
def test_file_sd_rejects_what_prometheus_rejects(
    tmp_path: Path, document: str, message: str
) -> None:
    path = tmp_path / "sd.json"
    path.write_text(document)
    with pytest.raises(SourceError) as info:
        FileSDSource(path).preload()
    assert message in str(info.value)
    assert str(info.value).startswith(str(path))


def test_check_reads_file_sd_and_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "sd.json").write_text(json.dumps([{"targets": ["localhost:80"]}]))
    config = tmp_path / "probe.toml"
    config.write_text('[[probe]]\nname = "w"\ntype = "http"\nfile_sd = "sd.json"\n')
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert f"{tmp_path / 'sd.json'}: group 0: bad target 'localhost:80'" in str(info.value)
    config.write_text(
        '[[probe]]\nname = "w"\ntype = "http"\nfile_sd = "sd.json"\n'
        'target_template = "http://{address}/health"\n'
    )
    loaded = load_config(config)
    assert loaded.probes[0][0].file_sd == "sd.json"


def test_sources_combine_and_first_source_labels_win(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("b:1\nc:1\n")
    (tmp_path / "sd.json").write_text(
        json.dumps([{"targets": ["c:1", "d:1"], "labels": {"zone": "z1"}}])
    )
    targets = ProbeTargets(
        "p", [TargetsFileSource(tmp_path / "t.txt"), FileSDSource(tmp_path / "sd.json")]
    )
    targets.preload()
    assert targets() == ("b:1", "c:1", "d:1")
    assert targets.labels_of("c:1") == {}
    assert targets.labels_of("d:1") == {"zone": "z1"}
    assert targets.snapshot.get("d:1") == Target(
        "d:1", {"zone": "z1", "__address__": "d:1", "__meta_filepath": str(tmp_path / "sd.json")}
    )
