"""Live reload in process (mock clock): unchanged probes untouched, changed ones restarted with
their counters, removed ones stopped after a final export, added ones started; an invalid
config changes nothing and is counted; /-/reload only from loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from trioprobe.config import load_config, parse_config
from trioprobe.metrics import Kind
from trioprobe.probes import probe_types
from trioprobe.reload import ReloadOutcome, plan_reload
from trioprobe.runner import Runner
from trioprobe.surfacers.prometheus import Options, PrometheusSurfacer

from ..core.test_runner import Recorder


@pytest.fixture(autouse=True)
def _fake_type() -> Iterator[None]:
    with probe_types.registered("fake", "tests.core.fake_probe"):
        yield


def _probe(name: str, targets: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "fake",
        "targets": targets,
        "interval": 1.0,
        "timeout": 0.5,
        "stats_interval": 2.0,
        **extra,
    }


def _toml(probes: list[dict[str, Any]]) -> str:
    out = ["shutdown_grace = 1.0"]
    for p in probes:
        out.append("[[probe]]")
        for key, value in p.items():
            out.append(f"{key} = {_value(value)}")
    return "\n".join(out) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return repr(value)


BEFORE = [_probe("keep", ["k1", "k2"]), _probe("change", ["c1", "c2"]), _probe("gone", ["g1"])]
AFTER = [
    _probe("keep", ["k1", "k2"]),
    _probe("change", ["c1", "c3"], interval=0.5),
    _probe("new", ["n1"]),
]


def _total(recorder: Recorder, probe: str, dst: str) -> int:
    series = [
        em
        for em in recorder.stats()
        if em.label("probe") == probe and em.label("dst") == dst and em.kind is Kind.CUMULATIVE
    ]
    return int(series[-1].metrics["total"].value) if series else 0  # type: ignore[attr-defined]


def test_plan_names_every_change() -> None:
    old = parse_config({"probe": BEFORE})
    new = parse_config({"probe": AFTER})
    plan = plan_reload(old, new)
    assert (plan.unchanged, plan.changed, plan.removed, plan.added) == (
        ("keep",),
        ("change",),
        ("gone",),
        ("new",),
    )
    assert plan.describe(new) == (
        "probe 'change' changed (restarted), probe 'gone' removed, probe 'new' added; "
        "1 probe(s) untouched"
    )


async def test_reload_keeps_unchanged_restarts_changed_stops_removed_starts_added(
    tmp_path: Path, autojump_clock: Any
) -> None:
    path = tmp_path / "probe.toml"
    path.write_text(_toml(BEFORE))
    recorder = Recorder()
    outcomes: list[ReloadOutcome] = []
    runner = Runner(
        load_config(path), extra_surfacers=[recorder], config_path=path, on_reload=outcomes.append
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(6.5)
        keep = runner.probes[0]
        keep_before, change_before = (
            _total(recorder, "keep", "k1"),
            _total(recorder, "change", "c1"),
        )
        assert keep_before >= 5
        exports_of_gone = len([em for em in recorder.stats() if em.label("probe") == "gone"])
        path.write_text(_toml(AFTER))
        outcome = await runner.request_reload()
        assert outcome.ok, outcome.message
        # The removed probe made its final export when it stopped.
        assert len([em for em in recorder.stats() if em.label("probe") == "gone"]) > (
            exports_of_gone
        )
        await trio.sleep(6.5)
        runner.shutdown()
    names = [spec.name for spec, _, _ in runner.probes]
    assert names == ["keep", "change", "new"]
    # Untouched: the same probe object and targets, and its counter just went on.
    assert runner.probes[0][1] is keep[1]
    assert runner.probes[0][2] is keep[2]
    assert _total(recorder, "keep", "k1") >= keep_before + 5
    # Restarted with its counters: c1 continued (no reset), c3 is new; c2 is no longer exported.
    change_totals = [
        int(em.metrics["total"].value)  # type: ignore[attr-defined]
        for em in recorder.stats()
        if em.label("probe") == "change" and em.label("dst") == "c1" and em.kind is Kind.CUMULATIVE
    ]
    assert change_totals == sorted(change_totals)  # monotonic across the reload
    assert change_totals[-1] >= change_before + 10  # twice as often after it
    assert _total(recorder, "change", "c3") > 0
    assert _total(recorder, "new", "n1") > 0
    assert outcomes == [outcome]
    assert outcome.message == f"reloaded {path}: " + (
        "probe 'change' changed (restarted), probe 'gone' removed, probe 'new' added; "
        "1 probe(s) untouched"
    )
    reloads = [em for em in recorder.own if "config_reloads" in em.metrics]
    assert reloads[-1].metrics["config_reloads"].values == {"failure": 0, "success": 1}  # type: ignore[attr-defined]


async def test_invalid_config_changes_nothing_and_is_counted(
    tmp_path: Path, autojump_clock: Any
) -> None:
    path = tmp_path / "probe.toml"
    path.write_text(_toml(BEFORE))
    recorder = Recorder()
    runner = Runner(load_config(path), extra_surfacers=[recorder], config_path=path)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(3)
        probes = runner.probes
        path.write_text(_toml([*BEFORE, _probe("bad", ["b"], interval=-1)]))
        outcome = await runner.request_reload()
        assert not outcome.ok
        assert outcome.message == (
            f"reload failed, still running the previous config: {path}: probe[3].interval: "
            "expected a finite number of seconds >= 0.001 and <= 31536000, got -1.0"
        )
        # A targets file that cannot be read fails the reload before anything is touched too.
        path.write_text(_toml([*BEFORE, _probe("more", [], targets_file="missing.txt")]))
        assert not (await runner.request_reload()).ok
        before = _total(recorder, "keep", "k1")
        await trio.sleep(5)
        runner.shutdown()
    assert runner.probes == probes
    assert _total(recorder, "keep", "k1") > before
    assert runner.reload_stats.results.values == {"failure": 2, "success": 0}
    gauges = [em for em in recorder.own if "config_last_reload_successful" in em.metrics]
    assert gauges[-1].metrics["config_last_reload_successful"].value == 0  # type: ignore[attr-defined]


async def test_reload_endpoint_only_from_loopback(autojump_clock: Any) -> None:
    surfacer = PrometheusSurfacer(Options(host="127.0.0.1", port=0))
    calls: list[str] = []

    async def handler() -> ReloadOutcome:
        calls.append("reload")
        return ReloadOutcome(True, "reloaded x: no changes")

    surfacer.reload_handler = handler
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    def scope(client: str, method: str = "POST") -> dict[str, Any]:
        return {"type": "http", "path": "/-/reload", "method": method, "client": (client, 5555)}

    for client, method, status in [
        ("192.0.2.7", "POST", 403),
        ("10.0.0.1", "POST", 403),
        ("127.0.0.1", "GET", 405),
        ("127.0.0.1", "POST", 200),
        ("::1", "POST", 200),
    ]:
        sent.clear()
        await surfacer.app(scope(client, method), receive, send)
        assert sent[0]["status"] == status, (client, method)
    assert calls == ["reload", "reload"]
    # Bound to a non-loopback address: refused even from loopback.
    exposed = PrometheusSurfacer(Options(host="0.0.0.0", port=0))
    exposed.reload_handler = handler
    sent.clear()
    await exposed.app(scope("127.0.0.1"), receive, send)
    assert sent[0]["status"] == 403
    assert calls == ["reload", "reload"]


async def test_reload_watch_reloads_when_the_file_changes(
    tmp_path: Path, autojump_clock: Any
) -> None:
    path = tmp_path / "probe.toml"
    path.write_text(_toml(BEFORE) + "[reload]\nwatch = true\n")
    changed = trio.Event()
    outcomes: list[ReloadOutcome] = []

    def on_reload(outcome: ReloadOutcome) -> None:
        outcomes.append(outcome)
        changed.set()

    runner = Runner(load_config(path), config_path=path, on_reload=on_reload)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(3)
        assert outcomes == []  # an unchanged file is not reloaded
        path.write_text(_toml(AFTER) + "[reload]\nwatch = true\n")
        await changed.wait()
        runner.shutdown()
    assert outcomes[0].ok
    assert [spec.name for spec, _, _ in runner.probes] == ["keep", "change", "new"]


async def test_reload_applies_alert_rules_and_keeps_unchanged_notifiers(
    tmp_path: Path, autojump_clock: Any
) -> None:
    alerts = (
        '[[alert]]\nname = "a"\nprobes = ["keep"]\nfailure_threshold = 3\nlog = false\n'
        '[[alert]]\nname = "b"\nprobes = ["change"]\nfailure_threshold = 3\nlog = false\n'
    )
    path = tmp_path / "probe.toml"
    path.write_text(_toml(BEFORE) + alerts)
    runner = Runner(load_config(path), config_path=path)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(3)
        kept_alert = runner.alerting.alerts["a"]
        states = {h.target: h for h in runner.health.entries("keep")}
        changed = alerts.replace(
            'probes = ["change"]\nfailure_threshold = 3',
            'probes = ["change"]\nfailure_threshold = 7',
        )
        path.write_text(_toml(BEFORE) + changed)
        outcome = await runner.request_reload()
        assert outcome.ok, outcome.message
        assert outcome.message.endswith("alerts changed; 3 probe(s) untouched")
        await trio.sleep(2)
        runner.shutdown()
    assert runner.alerting.alerts["a"] is kept_alert  # unchanged: same notifiers
    assert runner.health.rule_for("change").failure_threshold == 7
    assert all(h.rule.failure_threshold == 7 for h in runner.health.entries("change"))
    # The unchanged probe's target states are the same objects: nothing was reset.
    assert {h.target: h for h in runner.health.entries("keep")} == states
