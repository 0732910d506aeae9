"""History is on by default beside a config file, off with ``enabled = false``, never written
by a config built in code; probes added by a reload get history like the others."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from trioprobe.config import load_config, parse_config
from trioprobe.history import compute_summary, open_store
from trioprobe.probes import probe_types
from trioprobe.runner import Runner


@pytest.fixture(autouse=True)
def _fake_type() -> Iterator[None]:
    with probe_types.registered("fake", "tests.core.fake_probe"):
        yield


PROBE = '[[probe]]\nname = "{name}"\ntype = "fake"\ntargets = {targets}\ninterval = 10.0\n'


def test_history_defaults_to_a_file_beside_the_config(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "probe.toml"
    path.parent.mkdir()
    path.write_text(PROBE.format(name="web", targets='["a"]'))
    config = load_config(path)
    assert config.history is not None
    assert config.history.path == str(path.parent / "trioprobe-history.sqlite")
    # An empty table is the same file; a path is relative to the config's folder.
    path.write_text("[history]\n" + PROBE.format(name="web", targets='["a"]'))
    assert load_config(path).history == config.history
    path.write_text('[history]\npath = "h/x.db"\n' + PROBE.format(name="web", targets='["a"]'))
    assert load_config(path).history.path == str(path.parent / "h" / "x.db")  # type: ignore[union-attr]
    path.write_text("[history]\nenabled = false\n" + PROBE.format(name="web", targets='["a"]'))
    assert load_config(path).history is None
    # A config built in code (a library user's, the tests') writes no file unless it says so.
    in_code = parse_config({"probe": [{"name": "web", "type": "fake", "targets": ["a"]}]})
    assert in_code.history is None


async def test_a_probe_added_by_a_reload_gets_history(tmp_path: Path, autojump_clock: Any) -> None:
    path = tmp_path / "probe.toml"
    path.write_text(PROBE.format(name="old", targets='["o1"]'))
    runner = Runner(load_config(path), config_path=path)
    history = runner.history
    assert history is not None
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(30)
        path.write_text(
            PROBE.format(name="old", targets='["o1"]')
            + PROBE.format(name="new", targets='["n1"]')
            + 'slo = 0.99\nlatency_unit = "ms"\nlatency_buckets = { bounds = [0.5, 2.0, 10.0] }\n'
        )
        outcome = await runner.request_reload()
        assert outcome.ok, outcome.message
        await trio.sleep(200)
        runner.shutdown()
    # The results carry real wall-clock stamps (the mock clock moves only Trio's time): the
    # shutdown wrote even the open minute, so a summary a minute on counts every result.
    store = await trio.to_thread.run_sync(open_store, Path(history.spec.path))
    try:
        summary = compute_summary(store, time.time() // 60 * 60 + 120, history.probes)
        known = store.targets()
    finally:
        store.close()
    new = summary.targets[("new", "n1")]
    assert new.counts["1h"].probes >= 15
    assert new.uptime("1h") == 1.0
    assert new.slo == 0.99
    assert new.budget_remaining == 1.0
    # Its own buckets, not the default ones.
    assert known[("new", "n1")][1] == (float("-inf"), 0.0005, 0.002, 0.01)
    assert summary.targets[("old", "o1")].counts["1h"].probes >= 20
