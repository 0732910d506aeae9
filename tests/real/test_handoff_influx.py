"""The influxdb surfacer against a real InfluxDB 1.x that goes down and comes back.

Steady load (two series, one export each per 10 ms) while influxd runs, is stopped for a while
and is started again. Afterwards a query must show every exported point exactly once (count and
values) and in order per series.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio

from trioprobe._asgi import serve_asgi
from trioprobe.cli._demo import demo_app
from trioprobe.config import parse_config
from trioprobe.metrics import Distribution, EventMetrics, Int, Kind
from trioprobe.runner import Runner
from trioprobe.surfacers.influx import InfluxSurfacer, Options

from .services import InfluxDB

pytestmark = pytest.mark.real

SERIES = ("p1", "p2")
BASE_TS = 1_700_000_000.0


async def query(url: str, db: str, q: str) -> list[list[object]]:
    async with httpx.AsyncClient(base_url=url) as client:
        resp = await client.get("/query", params={"db": db, "q": q, "epoch": "ns"})
    resp.raise_for_status()
    result = resp.json()["results"][0]
    series = result.get("series", [])
    return [row for s in series for row in s["values"]]


async def test_points_exported_during_an_outage_arrive_exactly_once(
    influxdb: InfluxDB, tmp_path: Path
) -> None:
    options = Options(
        url=influxdb.url,
        database="hh_test",
        queue_dir=str(tmp_path / "handoff"),
        batch_size=50,
        batch_interval=0.05,
        retry_interval=0.01,
        retry_max_interval=0.25,
        request_timeout=2.0,
        drain_timeout=20.0,
    )
    surfacer = InfluxSurfacer(options)
    send, receive = trio.open_memory_channel[EventMetrics](1000)
    exported = 0
    exported_while_down = 0
    down = False

    async def load(seconds: float) -> None:
        nonlocal exported, exported_while_down
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            for probe in SERIES:
                em = EventMetrics(Kind.CUMULATIVE, timestamp=BASE_TS + exported * 0.01)
                em.add_label("probe", probe).add_metric("total", Int(exported))
                await send.send(em)
            exported += 1
            if down:
                exported_while_down += 1
            await trio.sleep(0.01)

    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            await nursery.start(surfacer.run, receive)
            await load(1.0)
            down = True
            await trio.to_thread.run_sync(influxdb.stop)
            await load(2.0)
            # Keep exporting while influxd starts up again.
            async with trio.open_nursery() as restart:
                restart.start_soon(load, 1.5)
                await trio.to_thread.run_sync(influxdb.start)
            down = False
            await load(0.5)
            await send.aclose()  # the surfacer flushes, drains the queue and returns

    assert surfacer.replayer is not None
    assert exported_while_down > 50, "the outage should have covered many exports"
    assert surfacer.replayer.replay_errors > 0, "sends should have failed during the outage"
    assert surfacer.dropped_points == 0
    for probe in SERIES:
        rows = await query(
            influxdb.url,
            "hh_test",
            f"SELECT probes FROM trioprobe WHERE probe='{probe}' ORDER BY time",
        )
        values = [row[1] for row in rows]
        # Exactly once: every export is there, no extra point; in order by time.
        assert values == list(range(exported)), f"series {probe}: {len(values)} of {exported}"
        times = [int(str(row[0])) for row in rows]
        assert times == sorted(times)
    count = await query(influxdb.url, "hh_test", "SELECT count(probes) FROM trioprobe")
    assert count[0][1] == exported * len(SERIES)


def _keeper_counters(exports: list[EventMetrics], target: str) -> EventMetrics:
    """The keeper's last counters of ``target`` (the alerting service's health metrics carry an
    ``alert`` label)."""
    return [
        em
        for em in exports
        if em.kind is Kind.CUMULATIVE and em.label("dst") == target and "alert" not in em.labels
    ][-1]


async def test_success_ratio_from_one_measurement(influxdb: InfluxDB, tmp_path: Path) -> None:
    """The schema's point: success / total in one InfluxQL query, equal to what was exported."""
    lines_path = tmp_path / "exports.jsonl"
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_asgi, demo_app)
        targets = [f"{url}/", f"{url}/missing"]
        config = parse_config(
            {
                "probe": [
                    {
                        "name": "web",
                        "type": "http",
                        "targets": targets,
                        "interval": 0.05,
                        "stats_interval": 0.2,
                        "latency_buckets": {"bounds": [1000.0, 100000.0]},
                        "labels": {"env": "test"},
                    }
                ],
                "surfacer": [
                    {"type": "lines", "path": str(lines_path), "format": "json"},
                    {
                        "type": "influxdb",
                        "url": influxdb.url,
                        "database": "ratio",
                        "queue_dir": str(tmp_path / "hh"),
                        "batch_interval": 0.05,
                    },
                ],
            }
        )
        runner = Runner(config)
        with trio.fail_after(60):
            async with trio.open_nursery() as run_nursery:
                await run_nursery.start(runner.run)
                await trio.sleep(1.0)
                runner.shutdown()  # run() returns once the final export is delivered
        nursery.cancel_scope.cancel()

    exports = [
        EventMetrics.from_json(json.loads(line)) for line in lines_path.read_text().splitlines()
    ]
    for target in targets:
        last = _keeper_counters(exports, target)
        total, success = last.metric("total"), last.metric("success")
        assert isinstance(total, Int)
        assert isinstance(success, Int)
        assert total.value > 0
        rows = await query(
            influxdb.url,
            "ratio",
            "SELECT last(success) / last(probes) FROM http "
            f"WHERE dst = '{target}' AND env = 'test'",
        )
        assert len(rows) == 1
        assert rows[0][1] == pytest.approx(success.value / total.value)
    # Only the failing target is down: the query did not mix the series up.
    up = [
        (await query(influxdb.url, "ratio", f"SELECT last(up) FROM http WHERE dst = '{t}'"))[0][1]
        for t in targets
    ]
    assert up == [1, 0]
    # Why the failing one fails (a 404): the last reason as string fields, and the failures
    # counted by reason and phase, equal to what the keeper exported.
    missing = targets[1]
    [[_, reason, phase]] = await query(
        influxdb.url,
        "ratio",
        'SELECT last("last_failure_reason"), last("last_failure_phase") FROM http '
        f"WHERE dst = '{missing}'",
    )
    assert (reason, phase) == ("http_status", "validate")
    failed = _keeper_counters(exports, missing)
    total, success = failed.metric("total"), failed.metric("success")
    assert isinstance(total, Int)
    assert isinstance(success, Int)
    [[_, count]] = await query(
        influxdb.url,
        "ratio",
        f"SELECT last(failures_http_status_validate) FROM http WHERE dst = '{missing}'",
    )
    assert count == total.value - success.value
    # The share of probes within 100 ms from the cumulative buckets (docs/metrics.md's p99
    # recipe), against the same share in the last export the lines surfacer wrote.
    dist = _keeper_counters(exports, targets[0]).metric("latency")
    assert isinstance(dist, Distribution)
    within = sum(n for b, n in zip(dist.lower_bounds, dist.bucket_counts, strict=True) if b < 0.1)
    rows = await query(
        influxdb.url,
        "ratio",
        'SELECT last("latency_seconds_le_0.1") / last("latency_seconds_count") FROM http '
        f"WHERE dst = '{targets[0]}'",
    )
    assert rows[0][1] == pytest.approx(within / dist.count)
