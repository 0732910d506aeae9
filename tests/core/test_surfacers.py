"""Fan-out, the lines surfacer and the Prometheus surfacer (render, expiry, a real /metrics)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from trioprobe.metrics import Distribution, EventMetrics, Float, Int, Kind, Map, String
from trioprobe.surfacers import Fanout
from trioprobe.surfacers import lines as lines_mod
from trioprobe.surfacers.prometheus import Options as PromOptions
from trioprobe.surfacers.prometheus import PrometheusSurfacer, render, sanitize_name


def _em(i: int, dst: str = "a", kind: Kind = Kind.CUMULATIVE) -> EventMetrics:
    em = EventMetrics(kind, 1000.0 + i).add_label("ptype", "http").add_label("dst", dst)
    return em.add_metric("total", Int(i)).add_metric("latency", Float(i * 1.5))


# -- fan-out ---------------------------------------------------------------------------------


async def test_fanout_slow_dead_fast(autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    source_send, source = trio.open_memory_channel[EventMetrics](0)
    fast_send, fast = trio.open_memory_channel[EventMetrics](100)
    slow_send, slow = trio.open_memory_channel[EventMetrics](2)
    dead_send, dead = trio.open_memory_channel[EventMetrics](100)
    dead.close()  # a surfacer that has died
    fanout = Fanout([("fast", fast_send), ("slow", slow_send), ("dead", dead_send)])
    got: list[EventMetrics] = []

    async def fast_consumer() -> None:
        async with fast:
            async for em in fast:
                got.append(em)

    with caplog.at_level(logging.WARNING, logger="trioprobe.surfacers"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fast_consumer)
            await nursery.start(fanout.run, source)
            async with source_send:
                with trio.fail_after(1):  # the slow and dead surfacers never hold us up
                    for i in range(10):
                        await source_send.send(_em(i))
    assert [em.timestamp for em in got] == [1000.0 + i for i in range(10)]
    assert fanout.dropped == {"fast": 0, "slow": 8, "dead": 10}
    # The slow surfacer got the first two; its channel was closed at the end, so it can finish.
    assert [em.timestamp async for em in slow] == [1000.0, 1001.0]
    assert "'slow'" in caplog.text
    assert "'dead'" in caplog.text
    assert "dropped 8 metrics in total" in caplog.text
    # Falling behind is reported at most every 10 s, not once per drop.
    assert caplog.text.count("is falling behind") == 2
    with pytest.raises(trio.ClosedResourceError):
        fast_send.send_nowait(_em(0))


# -- lines -----------------------------------------------------------------------------------


async def _run_lines(options: lines_mod.Options, items: list[EventMetrics]) -> None:
    surfacer = lines_mod.make_surfacer(options)
    send, receive = trio.open_memory_channel[EventMetrics](100)
    async with trio.open_nursery() as nursery:
        await nursery.start(surfacer.run, receive)
        async with send:
            for em in items:
                await send.send(em)


def _rich_em(i: int) -> EventMetrics:
    em = _em(i, dst="a b,c")
    d = Distribution.explicit([0.0, 1.0])
    d.add_sample(0.5)
    em.add_metric("codes", Map("code", {"200": i})).add_metric("dist", d)
    return em.add_metric("ver", String('x "y"'))


async def test_lines_text_file(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    items = [_rich_em(i) for i in range(3)]
    await _run_lines(lines_mod.Options(path=str(path), prefix="tp"), items[:2])
    await _run_lines(lines_mod.Options(path=str(path), prefix="tp"), items[2:])  # appends
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    ids = []
    for line, em in zip(lines, items, strict=True):
        prefix, ident, rest = line.split(" ", 2)
        assert prefix == "tp"
        ids.append(int(ident))
        assert EventMetrics.parse(rest) == em
    assert ids[1] == ids[0] + 1  # one run's ids grow by one per line


async def test_lines_json_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    items = [_rich_em(i) for i in range(3)] + [_em(9, kind=Kind.GAUGE)]
    await _run_lines(lines_mod.Options(path=str(path), format="json"), items)
    back = [EventMetrics.from_json(json.loads(line)) for line in path.read_text().splitlines()]
    assert back == items
    assert back[-1].kind is Kind.GAUGE


async def test_lines_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    await _run_lines(lines_mod.Options(), [_em(1)])
    out = capsys.readouterr().out
    assert out.startswith("trioprobe ")
    assert out.rstrip().endswith("labels=ptype=http,dst=a total=1 latency=1.5")


# -- prometheus ------------------------------------------------------------------------------


def test_render_counter_gauge_map_string() -> None:
    cum = EventMetrics(Kind.CUMULATIVE, 1.0).add_label("ptype", "http").add_label("dst", "a")
    cum.add_metric("total", Int(5)).add_metric("latency", Float(2.5))
    cum.add_metric("resp-code", Map("code", {"200": 4, "503": 1}))
    cum.add_metric("version", String("1.2"))
    gauge = EventMetrics(Kind.GAUGE, 1.0).add_label("dst", "a").add_metric("srtt", Float(0.001))
    text = render([cum, gauge])
    assert text == (
        "# TYPE total counter\n"
        'total{ptype="http",dst="a"} 5\n'
        "# TYPE latency counter\n"
        'latency{ptype="http",dst="a"} 2.5\n'
        "# TYPE resp_code counter\n"
        'resp_code{ptype="http",dst="a",code="200"} 4\n'
        'resp_code{ptype="http",dst="a",code="503"} 1\n'
        "# TYPE version gauge\n"
        'version{ptype="http",dst="a",val="1.2"} 1\n'
        "# TYPE srtt gauge\n"
        'srtt{dst="a"} 0.001\n'
    )
    assert render([]) == ""


def test_render_histogram() -> None:
    d = Distribution.explicit([0, 10, 100])
    for sample in (5, 5, 50, 500, -1):
        d.add_sample(sample)
    em = EventMetrics(Kind.CUMULATIVE, 1.0).add_label("dst", "a").add_metric("latency", d)
    lines = render([em], prefix="tp_").splitlines()
    assert lines == [
        "# TYPE tp_latency histogram",
        'tp_latency_bucket{dst="a",le="0"} 1',
        'tp_latency_bucket{dst="a",le="10"} 3',
        'tp_latency_bucket{dst="a",le="100"} 4',
        'tp_latency_bucket{dst="a",le="+Inf"} 5',
        'tp_latency_sum{dst="a"} 559.0',
        'tp_latency_count{dst="a"} 5',
    ]


def test_render_sanitises_and_escapes() -> None:
    em = EventMetrics(Kind.GAUGE, 1.0)
    em.add_label("dst", 'say "hi"\\\nbye').add_label("bad-label.x", "v").add_label("9lives", "z")
    em.add_metric("resp-code.v2", Int(1)).add_metric("2xx", Int(2))
    em.add_metric("m", Map("my-key", {"k": 1}))
    text = render([em])
    labels = '{dst="say \\"hi\\"\\\\\\nbye",bad_label_x="v",_9lives="z"}'
    assert f"resp_code_v2{labels} 1" in text
    assert f"_2xx{labels} 2" in text
    assert 'my_key="k"' in text
    assert sanitize_name("a:b-c") == "a:b_c"


def test_render_keeps_first_type_of_a_name() -> None:
    counter = EventMetrics(Kind.CUMULATIVE, 1.0).add_label("dst", "a").add_metric("x", Int(1))
    gauge = EventMetrics(Kind.GAUGE, 1.0).add_label("dst", "b").add_metric("x", Int(2))
    assert render([counter, gauge]) == '# TYPE x counter\nx{dst="a"} 1\n'


def test_render_special_floats() -> None:
    em = EventMetrics(Kind.GAUGE, 1.0).add_metric("a", Float(math.inf))
    em.add_metric("b", Float(-math.inf)).add_metric("c", Float(math.nan))
    assert render([em]).splitlines()[1::2] == ["a +Inf", "b -Inf", "c NaN"]


async def test_prometheus_latest_per_series_and_expiry(autojump_clock: Any) -> None:
    surfacer = PrometheusSurfacer(PromOptions(port=0, expiry=60.0))
    surfacer.record(_em(1, "a"))
    surfacer.record(_em(2, "b"))
    await trio.sleep(30)
    surfacer.record(_em(3, "a"))  # replaces a's earlier series
    surfacer.record(_em(4, "a", kind=Kind.GAUGE).add_metric("srtt", Float(0.5)))
    text = surfacer.render()
    assert 'total{ptype="http",dst="a"} 3' in text
    assert 'total{ptype="http",dst="b"} 2' in text
    assert 'srtt{ptype="http",dst="a"} 0.5' in text
    await trio.sleep(31)  # b was last seen 61 s ago
    text = surfacer.render()
    assert 'dst="b"' not in text
    assert 'total{ptype="http",dst="a"} 3' in text
    await trio.sleep(30)
    assert surfacer.render() == ""


async def test_prometheus_serves_metrics() -> None:
    """Real sockets, real time."""
    surfacer = PrometheusSurfacer(PromOptions(port=0, prefix="tp_"))
    send, receive = trio.open_memory_channel[EventMetrics](10)
    expected = 'tp_total{ptype="http",dst="a"} 7'
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(surfacer.run, receive)
            assert surfacer.url is not None
            assert surfacer.url.startswith("http://127.0.0.1:")
            send.send_nowait(_em(7, "a"))
            async with httpx.AsyncClient(base_url=surfacer.url) as client:
                response = await client.get("/metrics")
                while expected not in response.text:
                    await trio.sleep(0.01)
                    response = await client.get("/metrics")
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
                assert "# TYPE tp_total counter" in response.text
                assert (await client.get("/other")).status_code == 404
                assert (await client.post("/metrics")).status_code == 405
            send.close()  # the stream ends: the surfacer stops serving and returns by itself
