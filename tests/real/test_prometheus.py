"""A real Prometheus scrapes a running trioprobe ``/metrics``: it finds the probe's series under
their conventional names, and computes a p99 latency from the histogram."""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio

from trioprobe._asgi import serve_asgi
from trioprobe.cli._demo import demo_app
from trioprobe.config import parse_config
from trioprobe.runner import Runner

from .services import Prometheus

pytestmark = pytest.mark.real


def _query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def test_prometheus_scrapes_probe_series(prometheus_binary: str, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        target_url = await nursery.start(serve_asgi, demo_app)
        config = parse_config(
            {
                "probe": [
                    {
                        "name": "web",
                        "type": "http",
                        "targets": [f"{target_url}/", f"{target_url}/missing"],
                        "interval": 0.2,
                        "stats_interval": 0.5,
                        # 1 µs and 10 s: every loopback probe lands between the two, however
                        # busy the machine, so Prometheus's p99 has one exact value (below).
                        "latency_buckets": {"bounds": [1.0, 10_000_000.0]},
                        "labels": {"env": "test"},
                    }
                ],
                "surfacer": [{"type": "prometheus", "port": 0}],
            }
        )
        runner = Runner(config)
        await nursery.start(runner.run)
        surfacer = runner.surfacers[0][0]
        metrics_url: str = surfacer.url  # type: ignore[attr-defined]
        host_port = metrics_url.removeprefix("http://")

        prometheus = Prometheus(prometheus_binary, tmp_path, [host_port], scrape_interval="1s")
        await trio.to_thread.run_sync(prometheus.start)
        try:
            found: dict[str, list[dict[str, Any]]] = {}
            p99 = (
                "histogram_quantile(0.99, "
                'rate(trioprobe_latency_seconds_bucket{probe="web",dst=~".*/"}[1m]))'
            )
            with trio.fail_after(45):
                while True:
                    await trio.sleep(0.5)
                    found = {
                        name: await trio.to_thread.run_sync(
                            _query,
                            prometheus.url,
                            name if name == p99 else f'{name}{{probe="web"}}',
                        )
                        for name in ("trioprobe_probes_total", "trioprobe_success_total", p99)
                    }
                    ok = [
                        r for r in found["trioprobe_success_total"] if r["metric"]["dst"][-1] == "/"
                    ]
                    # rate() needs two scrapes of a changed counter: until then p99 is NaN.
                    quantiles = [float(r["value"][1]) for r in found[p99]]
                    if (
                        len(found["trioprobe_probes_total"]) == 2
                        and ok
                        and float(ok[0]["value"][1]) > 0
                        and quantiles
                        and all(math.isfinite(q) for q in quantiles)
                    ):
                        break
        finally:
            await trio.to_thread.run_sync(prometheus.stop)
        runner.shutdown()
        nursery.cancel_scope.cancel()

    by_dst = {r["metric"]["dst"]: r for r in found["trioprobe_probes_total"]}
    assert set(by_dst) == {f"{target_url}/", f"{target_url}/missing"}
    for series in found["trioprobe_probes_total"] + found["trioprobe_success_total"]:
        labels = series["metric"]
        assert labels["ptype"] == "http"
        assert labels["probe"] == "web"
        assert labels["env"] == "test"
        assert labels["job"] == "trioprobe"
    failing = next(
        r for r in found["trioprobe_success_total"] if r["metric"]["dst"].endswith("/missing")
    )
    assert float(failing["value"][1]) == 0.0
    assert float(by_dst[f"{target_url}/missing"]["value"][1]) > 0
    # histogram_quantile interpolates linearly inside the bucket the rank falls in: with every
    # sample in (1 µs, 10 s] that is 1e-6 + (10 - 1e-6) * 0.99, whatever the latencies were. Any
    # other value means our exposition is wrong: bounds not in seconds (1e6 times more), buckets
    # not cumulative, or samples counted in +Inf only (which gives the largest bound, 10).
    [quantile] = found[p99]
    assert float(quantile["value"][1]) == pytest.approx(1e-6 + (10 - 1e-6) * 0.99, rel=1e-9)
