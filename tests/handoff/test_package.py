"""The handoff package's shape: what it exports, its module names, and one list of queue options."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

import attrs
import pytest

import trioprobe.handoff
from trioprobe.handoff import DiskBackedQueue, QueueOptions, open_queue


def test_all_lists_what_users_call_and_resolves() -> None:
    exported = set(trioprobe.handoff.__all__)
    assert len(exported) == len(trioprobe.handoff.__all__)  # no name twice
    for name in exported:
        assert getattr(trioprobe.handoff, name) is not None
    # Units, defaults and the values calls return are not in the package's list...
    for name in ("GiB", "MiB", "DEFAULT_RETRY_INTERVAL", "DEFAULT_MAX_AGE", "Record", "QueueInfo"):
        assert name not in exported
    assert {"open_queue", "QueueOptions", "WriteReplayer", "HandoffError"} <= exported


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("disk_queue", "GiB"),
        ("disk_queue", "MiB"),
        ("disk_queue", "DEFAULT_MAX_SIZE"),
        ("disk_queue", "DEFAULT_MAX_SEGMENT_SIZE"),
        ("disk_queue", "DEFAULT_CLOSE_TIMEOUT"),
        ("disk_queue", "Record"),
        ("disk_queue", "RecoveryReport"),
        ("disk_queue", "QueuePosition"),
        ("disk_queue", "TruncatedTail"),
        ("disk_queue", "check_private_dir"),
        ("replayer", "DEFAULT_RETRY_INTERVAL"),
        ("replayer", "DEFAULT_RETRY_MAX_INTERVAL"),
        ("replayer", "DEFAULT_MAX_AGE"),
        ("replayer", "DEFAULT_PURGE_INTERVAL"),
        ("replayer", "ReplayerStats"),
        ("replayer", "ReplayQueue"),
        ("inspection", "QueueInfo"),
        ("inspection", "SegmentInfo"),
    ],
)
def test_the_rest_is_importable_from_its_module(module: str, name: str) -> None:
    mod = importlib.import_module(f"trioprobe.handoff.{module}")
    assert name in mod.__all__
    assert getattr(mod, name) is not None


def test_no_module_shadows_the_standard_library() -> None:
    """``handoff/inspect.py`` did: inside the package, ``import inspect`` was ambiguous to read."""
    names = {m.name for m in pkgutil.iter_modules(trioprobe.handoff.__path__)}
    assert "inspection" in names
    assert not names & sys.stdlib_module_names


def test_open_queue_keywords_are_the_queue_options() -> None:
    """The options are declared once, in QueueOptions; open_queue takes them as keywords."""
    params = list(inspect.signature(open_queue).parameters.values())
    assert params[0].name == "directory"
    fields = attrs.fields(QueueOptions)
    assert [(p.name, p.default) for p in params[1:]] == [(f.name, f.default) for f in fields]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])


async def test_options_reach_the_queue(tmp_path: Path) -> None:
    async with open_queue(tmp_path / "q") as q:
        assert q.options == QueueOptions()
    async with open_queue(tmp_path / "q", max_segment_size=200, sync="record") as q:
        assert q.options == QueueOptions(max_segment_size=200, sync="record")
        q.set_max_segment_size(300)
        assert q.options == QueueOptions(max_segment_size=300, sync="record")
    queue = DiskBackedQueue(tmp_path / "q", QueueOptions(verify=True))
    assert queue.options.verify
    assert DiskBackedQueue(tmp_path / "q").options == QueueOptions()


async def test_bad_options_are_refused_in_one_place(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sync must be 'group' or 'record'"):
        async with open_queue(tmp_path / "q", sync="fast"):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="max_segment_size 10 is too small"):
        QueueOptions(max_segment_size=10)
    with pytest.raises(TypeError):
        open_queue(tmp_path / "q", 10)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        open_queue(tmp_path / "q", max_sise=10)  # type: ignore[call-arg]
    assert not (tmp_path / "q").exists()
