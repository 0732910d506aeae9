"""The influxdb surfacer against a real InfluxDB 1.x that goes down and comes back.

Steady load (two series, one export each per 10 ms) while influxd runs, is stopped for a while
and is started again. Afterwards a query must show every exported point exactly once (count and
values) and in order per series.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from trioprobe.metrics import EventMetrics, Int, Kind
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
            influxdb.url, "hh_test", f"SELECT value FROM total WHERE probe='{probe}' ORDER BY time"
        )
        values = [row[1] for row in rows]
        # Exactly once: every export is there, no extra point; in order by time.
        assert values == list(range(exported)), f"series {probe}: {len(values)} of {exported}"
        times = [int(str(row[0])) for row in rows]
        assert times == sorted(times)
    count = await query(influxdb.url, "hh_test", "SELECT count(value) FROM total")
    assert count[0][1] == exported * len(SERIES)
