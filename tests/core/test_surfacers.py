"""Fan-out, the lines surfacer and the Prometheus surfacer (render, expiry, a real /metrics)."""

from __future__ import annotations

import json
import logging
import math
import types
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from trioprobe.cli import main
from trioprobe.config import exposition_warnings, parse_config
from trioprobe.failures import Failure, FailureReason, Phase, timed_out
from trioprobe.metrics import Distribution, EventMetrics, Float, Int, Kind, Map, String
from trioprobe.probes import probe_types
from trioprobe.results import ProbeResult
from trioprobe.surfacers import Fanout
from trioprobe.surfacers import lines as lines_mod
from trioprobe.surfacers.influx import to_lines as influx_lines
from trioprobe.surfacers.prometheus import Options as PromOptions
from trioprobe.surfacers.prometheus import PrometheusSurfacer, render


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
    cum.add_metric("total", Int(5)).add_metric("success", Int(4))
    cum.add_metric("resp-code", Map("code", {"200": 4, "503": 1}))
    cum.add_metric("version", String("1.2"))
    gauge = EventMetrics(Kind.GAUGE, 1.0).add_label("dst", "a").add_metric("srtt", Float(0.001))
    gauge.add_metric("up", Int(1))
    text = render([cum, gauge])
    assert text == (
        "# HELP trioprobe_probes_total Probes made.\n"
        "# TYPE trioprobe_probes_total counter\n"
        'trioprobe_probes_total{dst="a",ptype="http"} 5.0\n'
        "# HELP trioprobe_success_total Probes that succeeded.\n"
        "# TYPE trioprobe_success_total counter\n"
        'trioprobe_success_total{dst="a",ptype="http"} 4.0\n'
        "# HELP trioprobe_resp_code_total HTTP responses by status code.\n"
        "# TYPE trioprobe_resp_code_total counter\n"
        'trioprobe_resp_code_total{code="200",dst="a",ptype="http"} 4.0\n'
        'trioprobe_resp_code_total{code="503",dst="a",ptype="http"} 1.0\n'
        "# HELP trioprobe_version_info Text value 'version' as the label of a constant 1.\n"
        "# TYPE trioprobe_version_info gauge\n"
        'trioprobe_version_info{dst="a",ptype="http",val="1.2"} 1.0\n'
        "# HELP trioprobe_srtt_seconds Smoothed round-trip time to the peer (etcd probing).\n"
        "# TYPE trioprobe_srtt_seconds gauge\n"
        'trioprobe_srtt_seconds{dst="a"} 0.001\n'
        "# HELP trioprobe_up 1 if the target's last probe succeeded, 0 if it failed.\n"
        "# TYPE trioprobe_up gauge\n"
        'trioprobe_up{dst="a"} 1.0\n'
    )
    assert render([]) == ""


def test_render_histogram_in_seconds_with_any_prefix() -> None:
    d = Distribution.explicit([0, 0.25, 1.0])
    for sample in (0.125, 0.125, 0.5, 1.25, -1):
        d.add_sample(sample)
    em = EventMetrics(Kind.CUMULATIVE, 1.0).add_label("dst", "a").add_metric("latency", d)
    lines = [line for line in render([em], prefix="tp_").splitlines() if line[0] != "#"]
    assert lines == [
        'tp_latency_seconds_bucket{dst="a",le="0.0"} 1.0',
        'tp_latency_seconds_bucket{dst="a",le="0.25"} 3.0',
        'tp_latency_seconds_bucket{dst="a",le="1.0"} 4.0',
        'tp_latency_seconds_bucket{dst="a",le="+Inf"} 5.0',
        'tp_latency_seconds_count{dst="a"} 5.0',
        'tp_latency_seconds_sum{dst="a"} 1.0',
    ]
    assert "# TYPE latency_seconds histogram" in render([em], prefix="")


def test_names_and_units_follow_one_rule() -> None:
    """A metric nobody listed gets its name from its kind and a unit from its name."""
    em = EventMetrics(Kind.CUMULATIVE, 1.0).add_label("dst", "a")
    em.add_metric("connect_latency", Float(0.5)).add_metric("queue_bytes", Int(3))
    em.add_metric("errors_total", Int(2))
    lag = Distribution.explicit([0.001])
    em.add_metric("loop-lag", lag)
    gauge = EventMetrics(Kind.GAUGE, 1.0).add_label("dst", "a")
    gauge.add_metric("clock_diff", Float(-0.25)).add_metric("last_applied", Int(7))
    text = render([em, gauge])
    for line in (
        "# TYPE trioprobe_connect_latency_seconds_total counter",
        "# TYPE trioprobe_queue_bytes_total counter",
        "# TYPE trioprobe_errors_total counter",
        "# TYPE trioprobe_loop_lag_seconds histogram",
        "# TYPE trioprobe_clock_diff_seconds gauge",
        "# TYPE trioprobe_last_applied_index gauge",
        'trioprobe_clock_diff_seconds{dst="a"} -0.25',
    ):
        assert line in text


def _latency_series() -> tuple[EventMetrics, EventMetrics]:
    summed = EventMetrics(Kind.CUMULATIVE, 1.0).add_label("probe", "peers")
    summed.add_metric("success", Int(4)).add_metric("latency", Float(0.02))
    d = Distribution.explicit([0.001, 0.01])
    d.add_sample(0.005)
    hist = EventMetrics(Kind.CUMULATIVE, 1.0).add_label("probe", "web").add_metric("latency", d)
    return summed, hist


def test_summed_and_bucketed_latency_share_one_family_in_any_order() -> None:
    """The issue's data loss: the first type seen won and the other probe's latency vanished."""
    summed, hist = _latency_series()
    for order in ([summed, hist], [hist, summed]):
        text = render(order)
        assert text.count("# TYPE trioprobe_latency_seconds histogram") == 1
        # The summed probe: one +Inf bucket, count = its successes.
        assert 'trioprobe_latency_seconds_bucket{le="+Inf",probe="peers"} 4.0' in text
        assert 'trioprobe_latency_seconds_sum{probe="peers"} 0.02' in text
        assert 'trioprobe_latency_seconds_count{probe="peers"} 4.0' in text
        assert 'trioprobe_latency_seconds_bucket{le="0.01",probe="web"} 1.0' in text
        assert 'trioprobe_latency_seconds_count{probe="web"} 1.0' in text


def test_different_types_under_one_name_are_all_kept_under_fixed_names() -> None:
    counter = EventMetrics(Kind.CUMULATIVE, 1.0).add_label("dst", "a").add_metric("x", Int(1))
    gauge = EventMetrics(Kind.GAUGE, 1.0).add_label("dst", "b").add_metric("x", Int(2))
    hist = EventMetrics(Kind.CUMULATIVE, 1.0).add_label("dst", "c")
    hist.add_metric("x", Distribution.explicit([1.0]))
    info = EventMetrics(Kind.GAUGE, 1.0).add_label("dst", "d").add_metric("x", String("v"))
    expected = {
        "# TYPE trioprobe_x histogram",
        "# TYPE trioprobe_x_cumulative_total counter",
        'trioprobe_x_cumulative_total{dst="a"} 1.0',
        "# TYPE trioprobe_x_current gauge",
        'trioprobe_x_current{dst="b"} 2.0',
        'trioprobe_x_count{dst="c"} 0.0',
        # An info family is x_info in the text format, x in OpenMetrics: it clashes too.
        'trioprobe_x_text_info{dst="d",val="v"} 1.0',
    }
    for order in ([counter, gauge, hist, info], [info, hist, gauge, counter]):
        lines = set(render(order).splitlines())
        assert expected <= lines


def test_render_sanitises_and_escapes() -> None:
    em = EventMetrics(Kind.GAUGE, 1.0)
    em.add_label("dst", 'say "hi"\\\nbye').add_label("bad-label.x", "v").add_label("9lives", "z")
    em.add_metric("resp-code.v2", Int(1)).add_metric("2xx", Int(2)).add_metric("a:b", Int(3))
    em.add_metric("m", Map("my-key", {"k": 1})).add_metric("n", Map("dst", {"k": 1}))
    em.add_metric("s", String("t")).add_metric("l", Map("le", {"k": 1}))
    text = render([em], prefix="")
    labels = '{_9lives="z",bad_label_x="v",dst="say \\"hi\\"\\\\\\nbye"}'
    assert f"resp_code_v2{labels} 1.0" in text
    assert f"_2xx{labels} 2.0" in text
    assert f"a_b{labels} 3.0" in text  # ':' is for recording rules
    assert 'my_key="k"' in text
    # A key label may not replace the series' own labels, nor take a reserved name.
    assert 'dst_key="k"' in text
    assert 'le_key="k"' in text
    hist = EventMetrics(Kind.CUMULATIVE, 1.0).add_label("le", "user")
    hist.add_metric("latency", Distribution.explicit([1.0]))
    assert 'latency_seconds_bucket{exported_le="user",le="1.0"} 0.0' in render([hist], prefix="")


def test_render_special_floats() -> None:
    em = EventMetrics(Kind.GAUGE, 1.0).add_metric("a", Float(math.inf))
    em.add_metric("b", Float(-math.inf)).add_metric("c", Float(math.nan))
    samples = [line for line in render([em], prefix="").splitlines() if line[0] != "#"]
    assert samples == ["a +Inf", "b -Inf", "c NaN"]


def test_prefix_is_checked() -> None:
    assert PromOptions(prefix="").prefix == ""
    with pytest.raises(ValueError, match="prefix must be"):
        PromOptions(prefix="my-app")


async def test_prometheus_latest_per_series_and_expiry(autojump_clock: Any) -> None:
    surfacer = PrometheusSurfacer(PromOptions(port=0, expiry=60.0))
    surfacer.record(_em(1, "a"))
    surfacer.record(_em(2, "b"))
    await trio.sleep(30)
    surfacer.record(_em(3, "a"))  # replaces a's earlier series
    surfacer.record(_em(4, "a", kind=Kind.GAUGE).add_metric("srtt", Float(0.5)))
    text = surfacer.render()
    assert 'trioprobe_probes_total{dst="a",ptype="http"} 3.0' in text
    assert 'trioprobe_probes_total{dst="b",ptype="http"} 2.0' in text
    assert 'trioprobe_srtt_seconds{dst="a",ptype="http"} 0.5' in text
    await trio.sleep(31)  # b was last seen 61 s ago
    text = surfacer.render()
    assert 'dst="b"' not in text
    assert 'trioprobe_probes_total{dst="a",ptype="http"} 3.0' in text
    await trio.sleep(30)
    assert surfacer.render() == ""


async def test_prometheus_serves_metrics() -> None:
    """Real sockets, real time."""
    surfacer = PrometheusSurfacer(PromOptions(port=0, prefix="tp_"))
    send, receive = trio.open_memory_channel[EventMetrics](10)
    expected = 'tp_probes_total{dst="a",ptype="http"} 7.0'
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
                assert "# TYPE tp_probes_total counter" in response.text
                # OpenMetrics for a scraper that asks for it (Prometheus does).
                om = await client.get(
                    "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
                )
                assert om.headers["content-type"].startswith("application/openmetrics-text")
                assert "# TYPE tp_probes counter" in om.text
                assert om.text.endswith("# EOF\n")
                assert (await client.get("/other")).status_code == 404
                assert (await client.post("/metrics")).status_code == 405
            send.close()  # the stream ends: the surfacer stops serving and returns by itself


# -- clashes seen before running -------------------------------------------------------------


def _probe_table(name: str, type_: str, **keys: Any) -> dict[str, Any]:
    target = "http://x/" if type_ in ("http", "etcd_probing") else "x"
    return {"name": name, "type": type_, "targets": [target], **keys}


def test_check_warns_about_mixed_latency_buckets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = parse_config(
        {
            "probe": [
                _probe_table("web", "http", latency_buckets={"bounds": [1000, 10000]}),
                _probe_table("web2", "http", latency_buckets={"bounds": [1000, 10000]}),
                _probe_table("peers", "etcd_probing"),
            ]
        }
    )
    [warning] = exposition_warnings(config)
    assert warning.startswith("trioprobe_latency_seconds has different buckets per probe")
    assert "'web', 'web2': 2 bounds from 0.001 to 0.01 s" in warning
    assert "'peers': only +Inf" in warning
    same = parse_config({"probe": [_probe_table("a", "http"), _probe_table("b", "zmq")]})
    assert exposition_warnings(same) == []
    # `trioprobe check` prints it.
    path = tmp_path / "c.toml"
    path.write_text(
        '[[probe]]\nname = "a"\ntype = "http"\ntargets = ["http://x/"]\n'
        "latency_buckets = { bounds = [1.0] }\n"
        '[[probe]]\nname = "b"\ntype = "zmq"\ntargets = ["y"]\n'
        '[[surfacer]]\ntype = "prometheus"\nprefix = "my_"\n'
    )
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "  warning: my_latency_seconds has different buckets per probe" in out


def test_check_warns_about_one_name_with_two_types() -> None:
    module = types.ModuleType("custom_probe")
    module.EXPORTS = {"srtt": (Distribution.explicit([1.0]), Kind.CUMULATIVE)}  # type: ignore[attr-defined]
    module.Options = attrs.make_class("Options", {})  # type: ignore[attr-defined]
    module.make_probe = None  # type: ignore[attr-defined]
    with probe_types.registered("custom", module):
        config = parse_config(
            {"probe": [_probe_table("a", "etcd_probing"), _probe_table("b", "custom")]}
        )
        [warning] = exposition_warnings(config)
    assert warning == (
        "trioprobe_srtt_seconds is exported with different types (a gauge in 'a' (srtt); "
        "a histogram in 'b' (srtt)); all are kept: the histogram under this name, the gauge as "
        "trioprobe_srtt_current_seconds (see docs/metrics.md)"
    )
    # And at run time both are there, under the names the warning announces.
    gauge = EventMetrics(Kind.GAUGE, 1.0).add_label("probe", "a").add_metric("srtt", Float(0.5))
    hist = EventMetrics(Kind.CUMULATIVE, 1.0).add_label("probe", "b")
    text = render([gauge, hist.add_metric("srtt", Distribution.explicit([1.0]))])
    assert "# TYPE trioprobe_srtt_seconds histogram" in text
    assert 'trioprobe_srtt_current_seconds{probe="a"} 0.5' in text


def test_failures_by_reason_and_phase_from_the_results() -> None:
    """The results' classified failures become ``failures_total{reason, phase}`` (two labels from
    one compound map) and InfluxDB fields; a target that never failed has no failure series."""
    results = [
        ProbeResult("a", True, 0.1),
        ProbeResult("a", False, failure=Failure(FailureReason.CONNECT_REFUSED)),
        ProbeResult("a", False, failure=Failure(FailureReason.CONNECT_REFUSED)),
        ProbeResult("a", False, timeout=True, failure=timed_out(Phase.TLS)),
        ProbeResult("a", False),  # unclassified: `other`
    ]
    acc = results[0].metrics()
    for result in results[1:]:
        result.accumulate(acc)
    acc.add_label("dst", "a")
    text = render([acc])
    assert 'trioprobe_failures_total{dst="a",phase="connect",reason="connect_refused"} 2.0' in text
    assert 'trioprobe_failures_total{dst="a",phase="tls",reason="timeout"} 1.0' in text
    assert 'trioprobe_failures_total{dst="a",phase="unknown",reason="other"} 1.0' in text
    assert 'trioprobe_timeouts_total{dst="a"} 1.0' in text
    [line] = influx_lines(acc)
    assert "failures_connect_refused_connect=2i" in line
    assert "failures_timeout_tls=1i" in line
    healthy = ProbeResult("b", True, 0.1).metrics().add_label("dst", "b")
    assert "failures" not in render([healthy])


def test_last_failure_reason_is_an_influx_field_only() -> None:
    """The stats keeper's text gauges of the last failure: string fields in InfluxDB, left out
    of Prometheus (where failures_total answers the question without a churning label)."""
    gauge = EventMetrics(Kind.GAUGE, 1.0).add_label("ptype", "http").add_label("dst", "a")
    gauge.add_metric("up", Int(0))
    gauge.add_metric("last_failure_reason", String("tls_expired"))
    gauge.add_metric("last_failure_phase", String("tls"))
    [line] = influx_lines(gauge)
    assert 'last_failure_reason="tls_expired"' in line
    assert 'last_failure_phase="tls"' in line
    text = render([gauge])
    assert "last_failure" not in text
    assert 'trioprobe_up{dst="a",ptype="http"} 0.0' in text
