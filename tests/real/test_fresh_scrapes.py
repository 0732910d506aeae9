"""Issue 25 #3 against a real Prometheus: at a 1 s scrape interval, every scrape sees new counts.

trioprobe runs one http probe every 0.5 s with the default ``stats_interval`` (10 s); Prometheus
scrapes every second. Before, 9 scrapes in 10 saw the same counter value.
"""

from __future__ import annotations

import itertools
import json
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


def _samples(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def test_every_1s_scrape_sees_new_counts(prometheus_binary: str, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        target_url = await nursery.start(serve_asgi, demo_app)
        config = parse_config(
            {
                "probe": [
                    {"name": "web", "type": "http", "targets": [f"{target_url}/"], "interval": 0.5}
                ],
                "surfacer": [{"type": "prometheus", "port": 0}],
            }
        )
        assert config.probes[0][0].export_interval == 10.0
        runner = Runner(config)
        await nursery.start(runner.run)
        metrics_url: str = runner.surfacers[0][0].url  # type: ignore[attr-defined]
        prometheus = Prometheus(
            prometheus_binary, tmp_path, [metrics_url.removeprefix("http://")], scrape_interval="1s"
        )
        await trio.to_thread.run_sync(prometheus.start)
        try:
            values: list[float] = []
            with trio.fail_after(60):  # hang guard only: the verdict is on the samples
                while len(values) < 15:
                    await trio.sleep(1.0)
                    # The raw samples Prometheus stored, one per scrape.
                    result = await trio.to_thread.run_sync(
                        _samples, prometheus.url, 'trioprobe_probes_total{probe="web"}[30s]'
                    )
                    values = [float(v) for _, v in result[0]["values"]] if result else []
        finally:
            await trio.to_thread.run_sync(prometheus.stop)
        runner.shutdown()
        nursery.cancel_scope.cancel()
    # Every scrape stored a larger count than the one before it.
    assert all(b > a for a, b in itertools.pairwise(values)), values
