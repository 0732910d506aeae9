"""The exposition as Prometheus's own tools see it: ``promtool check metrics`` on a run with every
probe type and value kind, and the shipped example config showing every probe's latency.

The probes run against in-process loopback servers, as ``trioprobe demo`` does.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from trioprobe._asgi import serve_asgi
from trioprobe.cli._demo import demo_app, demo_config, serve_demo_dns, serve_echo
from trioprobe.config import load_config, parse_config
from trioprobe.metrics import EventMetrics, Kind, String
from trioprobe.probing import serve_health
from trioprobe.runner import Runner
from trioprobe.surfacers.prometheus import PrometheusSurfacer, render
from trioprobe.zmqnet import RouterServer

from .net_services import socat_udp_echo
from .services import require_binary
from .test_grpc import HealthServer

pytestmark = pytest.mark.real

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@asynccontextmanager
async def loopback_servers() -> AsyncIterator[tuple[str, str, str, str, str]]:
    """(http URL, health endpoint URL, zmq address, tcp echo, dns server), served until the
    block ends."""
    async with trio.open_nursery() as nursery:
        http_url = await nursery.start(serve_asgi, demo_app)
        health_url = await nursery.start(serve_health)
        zmq_addr = await nursery.start(RouterServer("tcp://127.0.0.1:0", workers=2).run)
        echo_addr = await nursery.start(serve_echo)
        dns_addr = await nursery.start(serve_demo_dns)
        yield http_url, health_url, zmq_addr, echo_addr, dns_addr
        nursery.cancel_scope.cancel()


def _prometheus(runner: Runner) -> PrometheusSurfacer:
    [surfacer] = [s for s, _ in runner.surfacers if isinstance(s, PrometheusSurfacer)]
    return surfacer


async def _scrape_until(url: str, ready: Callable[[str], bool]) -> str:
    async with httpx.AsyncClient() as client:
        with trio.fail_after(60):  # a hang guard: the condition is what ends the wait
            while True:
                text = (await client.get(url)).text
                if ready(text):
                    return text
                await trio.sleep(0.05)


def _latency_count(text: str, probe: str) -> float:
    pattern = rf'^trioprobe_latency_seconds_count{{[^}}]*probe="{probe}"[^}}]*}} (\S+)$'
    counts = [float(m) for m in re.findall(pattern, text, re.MULTILINE)]
    return sum(counts)


CHECK = """
async def check(ctx, target):
    async with ctx.step("fetch"):
        (await ctx.http.get(target)).raise_for_status()
    ctx.metric("pages", 1)
"""


def _other_probe_types(
    udp_port: int, grpc_target: str, check_file: Path, http_url: str
) -> list[dict[str, Any]]:
    """The probe types the demo does not run: udp (against socat), ping, external, grpc
    (against grpcio's health service) and script (a check against the demo's web app)."""
    program = [sys.executable, "-c", "print('queue_depth 7'); print('errors map:kind io:2')"]
    return [
        {"name": "dgram", "type": "udp", "targets": [f"127.0.0.1:{udp_port}"]},
        {"name": "icmp", "type": "ping", "targets": ["127.0.0.1"]},
        {"name": "script", "type": "external", "targets": ["x"], "command": program},
        {"name": "health", "type": "grpc", "targets": [grpc_target]},
        {"name": "journey", "type": "script", "targets": [http_url], "module": str(check_file)},
    ]


async def test_promtool_check_metrics_is_silent_on_every_probe_type_and_value_kind(
    tmp_path: Path,
) -> None:
    promtool = require_binary("promtool", "prometheus")
    check_file = tmp_path / "journey.py"
    check_file.write_text(CHECK)
    grpc_server = HealthServer()
    try:
        with socat_udp_echo(tmp_path) as udp_port:
            text = await _scrape_every_probe_type(udp_port, grpc_server.target, check_file)
    finally:
        grpc_server.stop()
    lint = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60
        )
    )
    report = (lint.stdout + lint.stderr).decode()
    assert lint.returncode == 0, report
    assert report.strip() == "", report


async def _scrape_every_probe_type(udp_port: int, grpc_target: str, check_file: Path) -> str:
    async with loopback_servers() as (http_url, health_url, zmq_addr, echo_addr, dns_addr):
        table: dict[str, Any] = demo_config(http_url, health_url, zmq_addr, echo_addr, dns_addr)
        table["probe"].extend(_other_probe_types(udp_port, grpc_target, check_file, http_url))
        for probe in table["probe"]:
            probe.update(interval=0.1, stats_interval=0.3)
            probe.pop("timeout", None)
        # /missing answers 404, so the http probe fails there: resp_code has several keys.
        table["probe"][0]["targets"].append(f"{http_url}/missing")
        # An alert on it, so the alerting service's metrics are in the run too.
        table["alert"] = [{"name": "web-down", "probes": ["web"]}]
        runner = Runner(parse_config(table))
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            surfacer = _prometheus(runner)
            # No built-in probe exports a string: record one beside the run's series.
            info = EventMetrics(Kind.GAUGE).add_label("ptype", "http").add_label("probe", "web")
            surfacer.record(info.add_label("dst", http_url).add_metric("version", String("1.2")))

            probes = [p["name"] for p in table["probe"]]

            def every_kind(text: str) -> bool:
                return all(_latency_count(text, p) > 0 for p in probes) and all(
                    f"\n{name}" in text
                    for name in (
                        "trioprobe_append_latency_seconds_bucket",
                        "trioprobe_srtt_seconds",
                        "trioprobe_clock_diff_seconds",
                        "trioprobe_last_applied_index",
                        'trioprobe_resp_code_total{code="404"',
                        "trioprobe_validation_failure_total",
                        "trioprobe_version_info",
                        "trioprobe_up",
                        "trioprobe_connect_latency_seconds",
                        "trioprobe_rcode_total",
                        "trioprobe_rtt_seconds_bucket",
                        "trioprobe_late_total",
                        "trioprobe_queue_depth",
                        "trioprobe_errors_total",
                        "trioprobe_health_up",
                        "trioprobe_serving_status_total",
                        "trioprobe_response_latency_seconds_count",
                        "trioprobe_step_duration_seconds",
                        "trioprobe_check_pages",
                        "trioprobe_alert_firing",
                        "trioprobe_health_transitions_total",
                    )
                )

            text = await _scrape_until(f"{surfacer.url}/metrics", every_kind)
            runner.shutdown()
    return text


async def test_example_config_shows_every_probe_latency(tmp_path: Path) -> None:
    """The shipped config mixes a bucketed latency (web) and a summed one (peers): both appear,
    whichever order the surfacer holds them in."""
    config = load_config(EXAMPLES / "config.toml")
    async with loopback_servers() as (_, health_url, *_):
        probes = tuple(
            (
                attrs.evolve(
                    spec, targets=(health_url,), targets_file=None, interval=0.1, stats_interval=0.3
                ),
                options,
            )
            for spec, options in config.probes
        )
        surfacers = tuple(
            (sspec, attrs.evolve(options, port=0))
            for sspec, options in config.surfacers
            if sspec.type == "prometheus"
        )
        # history=None: a config file has history on beside it, here in examples/.
        runner = Runner(attrs.evolve(config, probes=probes, surfacers=surfacers, history=None))
        names = [spec.name for spec, _ in probes]
        assert len(names) == 2
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            surfacer = _prometheus(runner)
            await _scrape_until(
                f"{surfacer.url}/metrics",
                lambda text: all(_latency_count(text, name) > 0 for name in names),
            )
            runner.shutdown()
    # The bug was order-dependent (the first type seen won): render the latency series in every
    # order (all the series would be too many permutations; the others hold no latency).
    series = [em for em, _ in surfacer._series.values() if em.metric("latency") is not None]
    assert len(series) >= 2
    for order in itertools.permutations(series):
        text = render(order)
        for name in names:
            assert _latency_count(text, name) > 0, (name, text)
        assert text.count("# TYPE trioprobe_latency_seconds histogram") == 1
