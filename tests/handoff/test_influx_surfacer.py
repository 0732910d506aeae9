"""The influxdb surfacer: line protocol conversion, and delivery through the handoff queue
against an in-memory HTTP transport that fails for a while."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import trio

from trioprobe.handoff import QueueWriteError, UnsafeQueueDirError
from trioprobe.metrics import Distribution, EventMetrics, Float, Int, Kind, Map, String
from trioprobe.surfacers.influx import InfluxSurfacer, Options, make_surfacer, to_lines


def test_line_protocol_values_and_tags() -> None:
    em = EventMetrics(Kind.CUMULATIVE, timestamp=1700000000.5)
    em.add_label("ptype", "http").add_label("probe", "web probe").add_label("dst", "a,b=c")
    em.add_label("empty", "")
    em.add_metric("total", Int(10)).add_metric("latency", Float(1.25))
    em.add_metric("version", String('say "hi"\\'))
    assert to_lines(em) == [
        r"total,dst=a\,b\=c,probe=web\ probe,ptype=http value=10i 1700000000500000000",
        r"latency,dst=a\,b\=c,probe=web\ probe,ptype=http value=1.25 1700000000500000000",
        r'version,dst=a\,b\=c,probe=web\ probe,ptype=http value="say \"hi\"\\" 1700000000500000000',
    ]


def test_line_protocol_map_distribution_and_skips() -> None:
    em = EventMetrics(Kind.CUMULATIVE, timestamp=2.0)
    em.add_label("probe", "p")
    em.add_metric("resp code", Map("code", {"200": 5, "503": 1}))
    d = Distribution.explicit([0.1, 1.0])
    for x in (0.05, 0.5, 0.7, 3.0):
        d.add_sample(x)
    em.add_metric("lat", d)
    em.add_metric("bad", Float(float("nan")))
    lines = to_lines(em, measurement_prefix="tp_")
    assert lines == [
        r"tp_resp\ code,code=200,probe=p value=5i 2000000000",
        r"tp_resp\ code,code=503,probe=p value=1i 2000000000",
        # Cumulative bucket counts by upper bound; NaN is left out.
        "tp_lat,probe=p count=4i,sum=4.25,le_0.1=1i,le_1=3i,le_+Inf=4i 2000000000",
    ]


def test_options_defaults_and_factory() -> None:
    o = Options()
    assert (o.url, o.database, o.rate_limit) == ("http://127.0.0.1:8086", "trioprobe", 0)
    assert o.resolved_queue_dir().endswith("influxdb-trioprobe")
    s = make_surfacer(Options(database="x y"))
    assert isinstance(s, InfluxSurfacer)
    assert s.name == "influxdb:http://127.0.0.1:8086/x y"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "influx:8086"}, "url must start with http"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"retry_interval": 5.0, "retry_max_interval": 1.0}, "retry_interval"),
        ({"rate_limit": -1}, "rate_limit"),
    ],
)
def test_options_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Options(**kwargs)  # type: ignore[arg-type]


class FakeInflux:
    """An in-memory InfluxDB /query + /write that can be 'down'."""

    def __init__(self) -> None:
        self.down = True
        self.databases: set[str] = set()
        self.lines: list[str] = []
        self.requests = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        params = parse_qs(request.url.query.decode())
        if request.url.path == "/query":
            q = params["q"][0]
            assert q.startswith("CREATE DATABASE ")
            self.databases.add(q.split('"')[1])
            return httpx.Response(200, json={"results": [{}]})
        assert request.url.path == "/write"
        assert params["precision"] == ["ns"]
        if params["db"][0] not in self.databases:
            return httpx.Response(404, json={"error": "database not found"})
        body = request.content.decode()
        if "poison" in body:
            return httpx.Response(400, json={"error": "unable to parse"})
        self.lines.extend(body.split("\n"))
        return httpx.Response(204)


async def test_exports_during_an_outage_arrive_in_order(tmp_path: Path) -> None:
    fake = FakeInflux()
    options = Options(
        url="http://influx.test",
        database="probes",
        queue_dir=str(tmp_path / "hh"),
        batch_size=5,
        batch_interval=0.01,
        retry_interval=0.001,
        retry_max_interval=0.02,
    )
    surfacer = InfluxSurfacer(options, transport=httpx.MockTransport(fake.handler))
    send, receive = trio.open_memory_channel[EventMetrics](100)
    with trio.fail_after(120):  # a hang guard, not a speed test
        async with trio.open_nursery() as nursery:
            await nursery.start(surfacer.run, receive)
            for i in range(40):
                em = EventMetrics(Kind.CUMULATIVE, timestamp=1000.0 + i)
                em.add_label("probe", "p").add_metric("total", Int(i))
                await send.send(em)
                if i == 5:
                    # Batches pile up on disk while InfluxDB is down, until a replay has failed.
                    assert surfacer.replayer is not None
                    with trio.fail_after(120):  # a hang guard, not a speed test
                        while surfacer.replayer.replay_errors == 0:  # noqa: ASYNC110
                            await trio.sleep(0.001)
                    fake.down = False
            await send.aclose()  # surfacer flushes and drains, then returns
    assert fake.databases == {"probes"}
    values = [int(line.split("value=")[1].split("i")[0]) for line in fake.lines]
    assert values == list(range(40))
    assert surfacer.queued_points == 40
    assert surfacer.dropped_points == 0
    m = surfacer.metrics()
    assert m.metric("replayed_records") is not None


async def test_rejected_batch_is_dropped_not_retried_forever(tmp_path: Path) -> None:
    fake = FakeInflux()
    fake.down = False
    options = Options(
        url="http://influx.test",
        queue_dir=str(tmp_path / "hh"),
        batch_size=1,
        retry_interval=0.001,
        retry_max_interval=0.01,
    )
    surfacer = InfluxSurfacer(options, transport=httpx.MockTransport(fake.handler))
    send, receive = trio.open_memory_channel[EventMetrics](10)
    with trio.fail_after(120):  # a hang guard, not a speed test
        async with trio.open_nursery() as nursery:
            await nursery.start(surfacer.run, receive)
            for value in ("ok1", "poison", "ok2"):
                em = EventMetrics(Kind.GAUGE, timestamp=5.0).add_metric("v", String(value))
                await send.send(em)
            await send.aclose()
    assert [line.split('"')[1] for line in fake.lines] == ["ok1", "ok2"]
    assert surfacer.replayer is not None
    assert surfacer.replayer.dropped_records == 1


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retried(tmp_path: Path, status: int) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/query":
            return httpx.Response(200)
        return httpx.Response(status if calls.count("/write") < 3 else 204)

    options = Options(
        url="http://influx.test",
        queue_dir=str(tmp_path / "hh"),
        retry_interval=0.001,
        retry_max_interval=0.01,
        batch_interval=0.01,
    )
    surfacer = InfluxSurfacer(options, transport=httpx.MockTransport(handler))
    send, receive = trio.open_memory_channel[EventMetrics](10)
    with trio.fail_after(120):  # a hang guard, not a speed test
        async with trio.open_nursery() as nursery:
            await nursery.start(surfacer.run, receive)
            await send.send(EventMetrics(timestamp=1.0).add_metric("x", Int(1)))
            await send.aclose()
    assert calls == ["/query", "/write", "/write", "/write"]
    assert surfacer.replayer is not None
    assert surfacer.replayer.replay_errors == 2


async def test_shutdown_reports_undelivered_bytes_not_disk_usage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeInflux()
    fake.down = False
    options = Options(
        url="http://influx.test",
        queue_dir=str(tmp_path / "hh"),
        batch_size=1,
        retry_interval=0.001,
        retry_max_interval=0.01,
        drain_timeout=0.2,
    )
    surfacer = InfluxSurfacer(options, transport=httpx.MockTransport(fake.handler))
    send, receive = trio.open_memory_channel[EventMetrics](10)
    first = EventMetrics(Kind.GAUGE, timestamp=5.0).add_metric("v", Int(1))
    second = EventMetrics(Kind.GAUGE, timestamp=6.0).add_metric("v", Int(22))
    with trio.fail_after(120):  # a hang guard, not a speed test
        async with trio.open_nursery() as nursery:
            await nursery.start(surfacer.run, receive)
            await send.send(first)
            while not fake.lines:  # noqa: ASYNC110
                await trio.sleep(0.001)
            fake.down = True
            await send.send(second)
            await send.aclose()
    undelivered = len("\n".join(to_lines(second)).encode()) + 16  # payload + record header
    warnings = [r.getMessage() for r in caplog.records if "at shutdown" in r.getMessage()]
    assert len(warnings) == 1
    # The delivered first batch is still on disk (same segment) but is not "left".
    assert f": {undelivered} bytes of undelivered records" in warnings[0]


def test_default_queue_dir_is_per_user() -> None:
    assert f"trioprobe-handoff-{os.getuid()}" in Options().resolved_queue_dir()


async def test_default_queue_parent_planted_by_someone_else_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = tmp_path / f"trioprobe-handoff-{os.getuid()}"
    root.mkdir()
    root.chmod(0o777)  # anyone could swap the queue directory inside it
    surfacer = InfluxSurfacer(Options(url="http://influx.test"))
    _send, receive = trio.open_memory_channel[EventMetrics](1)
    with pytest.raises(UnsafeQueueDirError, match="writable by group or others"):
        await surfacer.run(receive)
    assert list(root.iterdir()) == []
    root.chmod(0o700)
    fake = FakeInflux()
    fake.down = False
    surfacer = InfluxSurfacer(
        Options(url="http://influx.test"), transport=httpx.MockTransport(fake.handler)
    )
    send, receive = trio.open_memory_channel[EventMetrics](1)
    with trio.fail_after(120):  # a hang guard, not a speed test
        async with trio.open_nursery() as nursery:
            await nursery.start(surfacer.run, receive)
            await send.aclose()
    assert (root / "influxdb-trioprobe").is_dir()


async def test_disk_error_is_not_logged_as_a_certain_drop(caplog: pytest.LogCaptureFixture) -> None:
    class FailingReplayer:
        async def write(self, data: bytes) -> None:
            await trio.lowlevel.checkpoint()
            raise QueueWriteError("writing to queue q failed: I/O error")

    surfacer = InfluxSurfacer(Options())
    await surfacer._flush(["a value=1i 1", "b value=2i 1"], FailingReplayer())  # type: ignore[arg-type]
    assert surfacer.dropped_points == 2
    [message] = [r.getMessage() for r in caplog.records]
    assert "could not queue 2 points" in message
    assert "may still be delivered" in message
