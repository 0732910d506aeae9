"""The influxdb surfacer: line protocol conversion, and delivery through the handoff queue
against an in-memory HTTP transport that fails for a while."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import trio

from trioprobe.config import parse_config
from trioprobe.handoff import QueueWriteError, UnsafeQueueDirError
from trioprobe.metrics import Distribution, EventMetrics, Float, Int, Kind, Map, String
from trioprobe.probes import probe_types
from trioprobe.runner import Runner
from trioprobe.surfacers.influx import InfluxSurfacer, Options, make_surfacer, to_lines
from trioprobe.surfacers.prometheus import render


def test_one_point_per_export_with_metrics_as_fields() -> None:
    em = EventMetrics(Kind.CUMULATIVE, timestamp=1700000000.5)
    em.add_label("ptype", "http").add_label("probe", "web probe").add_label("dst", "a,b=c")
    em.add_label("empty", "")
    em.add_metric("total", Int(10)).add_metric("success", Int(9)).add_metric("timeouts", Int(1))
    em.add_metric("latency", Float(1.25))
    em.add_metric("version", String('say "hi"\\'))
    assert to_lines(em) == [
        r"http,dst=a\,b\=c,probe=web\ probe probes=10i,success=9i,timeouts=1i,"
        r"latency_seconds_sum=1.25,latency_seconds_count=9i,latency_seconds_le_+Inf=9i,"
        r'version="say \"hi\"\\" 1700000000500000000'
    ]
    # A configured measurement keeps the probe type as a tag.
    [line] = to_lines(em, "tp_", measurement="probes")
    assert line.startswith(r"tp_probes,dst=a\,b\=c,probe=web\ probe,ptype=http probes=10i,")


def test_maps_distributions_gauges_and_skips() -> None:
    em = EventMetrics(Kind.CUMULATIVE, timestamp=2.0)
    em.add_label("probe", "p")
    em.add_metric("resp-code", Map("code", {"200": 5, "5 03": 1}))
    d = Distribution.explicit([0.1, 1.0])
    for x in (0.05, 0.5, 0.7, 3.0):
        d.add_sample(x)
    em.add_metric("append_latency", d)
    em.add_metric("bad", Float(float("nan")))
    assert to_lines(em) == [
        # No probe type: the measurement is "trioprobe". NaN is left out.
        r"trioprobe,probe=p resp_code_200=5i,resp_code_5\ 03=1i,append_latency_seconds_sum=4.25,"
        "append_latency_seconds_count=4i,append_latency_seconds_le_0.1=1i,"
        "append_latency_seconds_le_1=3i,append_latency_seconds_le_+Inf=4i 2000000000"
    ]
    gauge = EventMetrics(Kind.GAUGE, timestamp=2.0).add_label("probe", "p")
    gauge.add_metric("srtt", Float(0.5)).add_metric("last_applied", Int(3)).add_metric("up", Int(1))
    assert to_lines(gauge) == [
        "trioprobe,probe=p srtt_seconds=0.5,last_applied_index=3i,up=1i 2000000000"
    ]
    assert to_lines(EventMetrics(timestamp=1.0).add_metric("x", Float(math.inf))) == []


async def test_counters_and_gauges_of_an_export_are_one_point(tmp_path: Path) -> None:
    fake = FakeInflux()
    fake.down = False
    options = Options(url="http://influx.test", queue_dir=str(tmp_path / "hh"))
    surfacer = InfluxSurfacer(options, transport=httpx.MockTransport(fake.handler))
    send, receive = trio.open_memory_channel[EventMetrics](10)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(surfacer.run, receive)
            for dst in ("a", "b"):
                counters = EventMetrics(Kind.CUMULATIVE, timestamp=3.0).add_label("ptype", "zmq")
                counters.add_label("dst", dst).add_metric("total", Int(4))
                counters.add_metric("success", Int(3))
                gauges = EventMetrics(Kind.GAUGE, timestamp=3.0).add_label("ptype", "zmq")
                await send.send(counters)
                await send.send(gauges.add_label("dst", dst).add_metric("up", Int(0)))
            await send.aclose()
    assert fake.lines == [
        "zmq,dst=a probes=4i,success=3i,up=0i 3000000000",
        "zmq,dst=b probes=4i,success=3i,up=0i 3000000000",
    ]
    assert surfacer.queued_points == 2


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
    values = [int(line.split("probes=")[1].split("i")[0]) for line in fake.lines]
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


async def test_backlog_is_exported_while_influxdb_is_down(tmp_path: Path) -> None:
    """The runner exports the surfacer's queue backlog, so an alert can watch it grow."""
    from tests.core.test_runner import Recorder

    fake = FakeInflux()  # down all along
    influx = InfluxSurfacer(
        Options(url="http://influx.test", queue_dir=str(tmp_path / "hh"), batch_interval=0.01),
        transport=httpx.MockTransport(fake.handler),
    )
    recorder = Recorder()
    probe = {"name": "f", "type": "fake", "targets": ["a"], "interval": 0.05, "stats_interval": 0.1}
    with probe_types.registered("fake", "tests.core.fake_probe"):  # the runner loads it here
        runner = Runner(parse_config({"probe": [probe]}), extra_surfacers=[influx, recorder])
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            backlog: list[int] = []
            while len(backlog) < 2 or backlog[-1] <= backlog[0]:  # until it has grown
                await trio.sleep(0.05)
                # Self-metrics carry ptype="runner", so the recorder files them as `own`.
                backlog = [
                    em.metric("handoff_backlog_bytes").value  # type: ignore[union-attr]
                    for em in recorder.own
                    if em.metric("handoff_backlog_bytes") is not None
                ]
            nursery.cancel_scope.cancel()
    counters = [em for em in recorder.own if em.metric("handoff_queued_points") is not None]
    assert counters[-1].label("surfacer") == influx.name
    assert counters[-1].label("ptype") == "runner"  # the one labelling rule of self-metrics
    text = render(recorder.own)
    assert "# TYPE trioprobe_handoff_backlog_bytes gauge" in text
    assert "# TYPE trioprobe_handoff_replay_errors_total counter" in text
