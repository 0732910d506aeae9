"""The history service under Trio's MockClock: uptime, quantiles and SLO figures against
ground truth computed by hand from the same results, across downsampling and restarts."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from trioprobe.alerting import Transition
from trioprobe.history import HistoryService, compute_summary, open_store
from trioprobe.history._windows import DAY, HOUR
from trioprobe.results import ProbeResult
from trioprobe.specs import HistorySpec, ProbeSpec

T0 = 1_750_000_000 // DAY * DAY + 5 * HOUR + 1830  # not aligned to anything but the second
EVERY = 30.0  # seconds between results


def _fails(t: float) -> bool:
    """The script: every 7th result fails, and two outages."""
    k = round((t - T0) / EVERY)
    outage = T0 + 10 * HOUR <= t < T0 + 10 * HOUR + 1500 or T0 + 40 * HOUR <= t < T0 + 41 * HOUR
    return k % 7 == 0 or outage


def _latency(t: float) -> float:
    return 0.004 if round((t - T0) / EVERY) % 2 else 0.02


def _spec(tmp_path: Path) -> HistorySpec:
    return HistorySpec(path=str(tmp_path / "h.sqlite"))


PROBE = ProbeSpec(name="web", type="http", targets=("a", "b"), slo=0.99)


async def _run_span(
    tmp_path: Path, start: float, end: float, wall: Callable[[], float], *, finish: bool = True
) -> HistoryService:
    """One run of the service feeding results for targets a and b over [start, end)."""
    service = HistoryService(_spec(tmp_path), [PROBE], wall=wall)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        t = start
        while t < end:
            await trio.sleep_until(t - T0)
            for target in ("a", "b"):
                fail = _fails(t) if target == "a" else False
                service.feed(
                    "web",
                    ProbeResult(target, not fail, _latency(t), timestamp=t, error="boom" * fail),
                )
            t += EVERY
        if finish:
            service.finish()
        else:
            # The writer thread runs in real time while the mock clock jumps: wait until the
            # last closed period is written, then stop as a kill would (the open one is lost).
            while service.flushed_until < end // 60 * 60:  # noqa: ASYNC110 - mock time
                await trio.sleep(1)
            nursery.cancel_scope.cancel()
    return service


def _truth(lo: float, hi: float, target: str = "a") -> tuple[int, int]:
    n = ok = 0
    k = 0
    while T0 + k * EVERY < hi:
        t = T0 + k * EVERY
        if t >= lo:
            n += 1
            ok += not (_fails(t) if target == "a" else False)
        k += 1
    return n, ok


async def test_uptime_matches_ground_truth_across_downsampling_and_a_restart(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    def wall() -> float:
        return T0 + trio.current_time()

    # 30 h, a graceful restart, then 22 h more: the first hours fall out of the 48 h of
    # minutes and are answered from hour rows.
    await _run_span(tmp_path, T0, T0 + 30 * HOUR, wall)
    await _run_span(tmp_path, T0 + 30 * HOUR, T0 + 52 * HOUR + 600, wall)
    now = (T0 + 52 * HOUR + 600) // 60 * 60
    store = await trio.to_thread.run_sync(open_store, Path(_spec(tmp_path).path))
    try:
        summary = compute_summary(store, now, {"web": PROBE})
        a = summary.targets[("web", "a")]
        for window, seconds in (("1h", HOUR), ("6h", 6 * HOUR), ("24h", DAY)):
            n, ok = _truth(now - seconds, now)
            assert (a.counts[window].probes, a.counts[window].successes) == (n, ok), window
        # 7 and 30 days reach before the first result: everything recorded.
        n, ok = _truth(T0, now)
        assert (a.counts["30d"].probes, a.counts["30d"].successes) == (n, ok)
        assert (a.counts["7d"].probes, a.counts["7d"].successes) == (n, ok)
        # A window whose start is older than the 48 h of minutes counts from the next hour.
        marks = store.watermarks()
        far = now - 50 * HOUR - 1234
        counts = store.counts(far, now, marks)[store.targets()[("web", "a")][0]]
        assert (counts.probes, counts.successes) == _truth((far // HOUR + 1) * HOUR, now)
        # The SLO figures from the same counts, by the formulas of the SRE workbook.
        n1, ok1 = _truth(now - HOUR, now)
        assert a.burn_rates["1h"] == pytest.approx((1 - ok1 / n1) / 0.01)
        assert a.budget_remaining == pytest.approx(1 - (n - ok) / (0.01 * n))
        # Latency: half at 4 ms, half at 20 ms, so p50 is in the 2.5-5 ms bucket, p99 at 20 ms.
        assert a.p50_24h is not None
        assert 0.0025 <= a.p50_24h <= 0.025
        assert a.p99_24h is not None
        assert 0.01 <= a.p99_24h <= 0.025
        b = summary.targets[("web", "b")]
        assert b.uptime("30d") == 1.0
        # Daily figures add up to the whole: the day rows hold everything written, here also
        # the minute in progress that the second run's shutdown wrote.
        days = a.days()
        n_all, ok_all = _truth(T0, T0 + 52 * HOUR + 600)
        assert sum(d.probes for d in days.values()) == n_all
        assert sum(d.successes for d in days.values()) == ok_all
        rows = store.read_conn.execute("SELECT tier, count(*) FROM rollup GROUP BY tier")
        tiers = dict(rows.fetchall())
        assert tiers[1] > 0
        assert tiers[2] > 0
        # Minutes past 48 h were pruned (pruning runs with each hour's rollup, so up to an hour
        # and the rollup lag more stay).
        assert tiers[0] <= 2 * (49 * 60 + 3)
    finally:
        store.close()


async def test_a_kill_loses_only_the_open_period(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    def wall() -> float:
        return T0 + trio.current_time()

    end = T0 + 3 * HOUR + 45  # 45 s into a minute
    await _run_span(tmp_path, T0, end, wall, finish=False)
    store = await trio.to_thread.run_sync(open_store, Path(_spec(tmp_path).path))
    try:
        tid = store.targets()[("web", "a")][0]
        # From the start of T0's minute: a window starting mid-minute leaves that minute out.
        got = store.counts(T0 // 60 * 60, end + 60, store.watermarks())[tid]
        closed, _ = _truth(T0, end // 60 * 60)
        everything, _ = _truth(T0, end)
        # Every closed minute is there; at most the open one is lost.
        assert closed <= got.probes <= everything
        assert everything > closed  # the kill came with a period open
    finally:
        store.close()


async def test_incidents_from_transitions_survive_a_restart(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    def wall() -> float:
        return T0 + trio.current_time()

    def tr(old: str, new: str, t: float) -> Transition:
        return Transition("web", "a", old, new, t, 3, 10, "ConnectError: refused", "web-down")  # type: ignore[arg-type]

    for transitions in (
        [tr("up", "down", T0 + 100)],
        [tr("unknown", "down", T0 + 200)],
        [tr("down", "up", T0 + 300)],
    ):
        service = HistoryService(_spec(tmp_path), [PROBE], wall=wall)
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            for t in transitions:
                service.on_transition(t)
            service.finish()
    store = await trio.to_thread.run_sync(open_store, Path(_spec(tmp_path).path))
    try:
        found = store.incidents(T0 - DAY)
        # One incident: down before the restart, still down after it, up at T0 + 300.
        assert found == [("web", "a", T0 + 100, T0 + 300, "ConnectError: refused", "web-down")]
    finally:
        store.close()


async def test_a_corrupt_database_is_moved_aside(
    autojump_clock: trio.abc.Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = Path(_spec(tmp_path).path)
    await trio.Path(path).write_bytes(b"this is not a database" * 100)
    store = await trio.to_thread.run_sync(open_store, path)
    store.close()
    aside = list(await trio.Path(tmp_path).glob("h.sqlite.corrupt-*"))
    assert len(aside) == 1
    assert (await aside[0].read_bytes()).startswith(b"this is not")
    assert any("moved to" in r.getMessage() for r in caplog.records)
    assert sqlite3.connect(path).execute("SELECT count(*) FROM target").fetchone() == (0,)


def test_size_per_target_per_day_is_bounded(tmp_path: Path) -> None:
    """A day of one target probed every second, failing now and then: bytes on disk per
    target per day at each tier, with 20 targets so per-page overheads average out."""
    import json

    from trioprobe.history.store import MinuteRow, Store

    store = Store(tmp_path / "size.sqlite")
    try:
        day = T0 // DAY * DAY
        targets = 20
        for hour in range(24):
            rows = [
                MinuteRow(
                    "web",
                    f"http://10.0.{i // 250}.{i % 250}:8080/health",
                    json.dumps([0.0, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1]),
                    day + 60 * m,
                    60,
                    60 - (m % 17 == 0),
                    60 * 0.0031,
                    {3: 20, 4: 30, 5: 9},
                    "ReadTimeout: timed out after 1.0 s" if m % 17 == 0 else None,
                )
                for i in range(targets)
                for m in range(hour * 60, hour * 60 + 60)
            ]
            store.write(rows, [])
        store.write_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.write_conn.execute("VACUUM")
        size = (tmp_path / "size.sqlite").stat().st_size
    finally:
        store.close()
    per_target_day = size / targets
    print(f"minute rows: {per_target_day / 1024:.1f} KiB per target per day")
    # docs/history.md: ~80 KiB per target per day of minutes (kept 2 days), which bounds the
    # whole store at 2 x 80 + 90 x 24 x ~60 B + 730 x ~60 B per target.
    assert per_target_day < 100 * 1024


async def test_an_unusable_path_turns_history_off_not_probing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    await trio.Path(blocker).write_text("a file where a folder should be")
    service = HistoryService(HistorySpec(path=str(blocker / "h.sqlite")), [PROBE])
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        service.feed("web", ProbeResult("a", True, 0.001))
        service.finish()
    assert service.disabled
    assert not service._open
    assert any("history is off: cannot open" in r.getMessage() for r in caplog.records)


def test_targets_probed_alike_share_their_summary_counts(tmp_path: Path) -> None:
    """Issue 19, memory per target: a summary holds every target's counts per window, and
    targets probed alike (most of a large config) share one read-only mapping of equal
    counts instead of each holding its own; one that differs keeps its own figures. The
    targets' bucket bounds are one tuple too."""
    import json

    from trioprobe.history.store import MinuteRow, Store

    store = Store(tmp_path / "alike.sqlite")
    bounds = json.dumps([0.0, 0.001, 0.01])
    try:
        day = T0 // DAY * DAY
        rows = [
            MinuteRow("web", f"t{i}", bounds, day + 60 * m, 6, 6 - (i == 0), 0.01, {1: 5}, None)
            for i in range(50)
            for m in range(30)
        ]
        store.write(rows, [])
        plain = ProbeSpec(name="web", type="http", targets=("t0",))
        summary = compute_summary(store, day + 60 * 30, {"web": plain})
        ids = store.targets()
    finally:
        store.close()
    alike = [summary.targets[("web", f"t{i}")] for i in range(1, 50)]
    assert alike[0].counts["1h"].probes == 180
    assert alike[0].uptime("1h") == 1.0
    assert all(s.counts is alike[0].counts for s in alike)
    assert all(s.burn_rates is alike[0].burn_rates and not s.burn_rates for s in alike)
    odd = summary.targets[("web", "t0")]
    assert odd.counts is not alike[0].counts
    assert odd.counts["1h"].successes == 150
    with pytest.raises(TypeError):
        odd.counts["1h"] = odd.counts["24h"]  # type: ignore[index]  # shared: read-only
    assert ids[("web", "t1")][1] is ids[("web", "t2")][1]  # one tuple of bounds per probe
