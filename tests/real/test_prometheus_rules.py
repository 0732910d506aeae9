"""The shipped alert rules (examples/prometheus/) pass ``promtool check rules`` and their unit
tests, and those tests use series trioprobe really exports: a rename on either side fails here."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from trioprobe.config import LatencyBuckets
from trioprobe.metrics import EventMetrics, Kind
from trioprobe.results import ProbeResult
from trioprobe.surfacers.influx import InfluxSurfacer, Options
from trioprobe.surfacers.prometheus import render

from .services import require_binary

pytestmark = pytest.mark.real

RULES = Path(__file__).resolve().parents[2] / "examples" / "prometheus"
# Labels Prometheus adds at scrape time, not trioprobe.
_SCRAPE_LABELS = {"job", "instance"}
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _promtool(*args: str) -> str:
    promtool = require_binary("promtool", "prometheus")
    done = subprocess.run(
        [promtool, *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_rules_are_valid() -> None:
    assert "SUCCESS: 6 rules found" in _promtool("check", "rules", "rules.yml")


def test_rule_unit_tests_pass() -> None:
    assert "SUCCESS" in _promtool("test", "rules", "rules_test.yml")


class _Queue:
    """Stands in for the handoff queue, whose sizes the surfacer reports."""

    def pending_bytes(self) -> int:
        return 1000

    def disk_usage(self) -> int:
        return 4096


def _exposition() -> str:
    """What trioprobe exports for the kinds of probe the rule tests use, built by the same code
    the probes and the keeper run."""
    series: list[EventMetrics] = []

    def labelled(em: EventMetrics, ptype: str, probe: str, dst: str) -> EventMetrics:
        return em.add_label("ptype", ptype).add_label("probe", probe).add_label("dst", dst)

    buckets = LatencyBuckets(bounds=(100_000.0, 1_000_000.0)).distribution(1e-6)
    web = ProbeResult("http://127.0.0.1:8080/", True, 0.2)
    series.append(labelled(web.metrics(latency_distribution=buckets), "http", "web", web.target))
    series.append(
        labelled(EventMetrics(Kind.GAUGE), "http", "web", web.target).add_metric(
            "up",
            web.metrics().metric("success"),  # type: ignore[arg-type]
        )
    )
    peer = ProbeResult("p", True, 0.01, gauges={"srtt": 0.01, "clock_diff": 1.5})
    gauges = peer.gauge_metrics()
    assert gauges is not None
    series.append(labelled(gauges, "etcd_probing", "peers", "p"))
    log = ProbeResult("etcd:x", True, 0.01, extras={"restarts": 1})
    series.append(labelled(log.metrics(), "logping", "log", "etcd:x"))
    influx = InfluxSurfacer(Options())
    influx._queue = _Queue()  # type: ignore[assignment]
    series.extend(influx.self_metrics())
    return render(series)


def _parse(line: str) -> tuple[str, dict[str, str]]:
    match = _SAMPLE.match(line)
    assert match, line
    return match[1], dict(_LABEL.findall(match[2] or ""))


def test_rule_test_series_are_shaped_as_trioprobe_exports_them() -> None:
    exported: dict[str, list[dict[str, str]]] = {}
    for line in _exposition().splitlines():
        if not line.startswith("#"):
            name, labels = _parse(line)
            exported.setdefault(name, []).append(labels)
    used = re.findall(r"series: '([^']*)'", (RULES / "rules_test.yml").read_text())
    assert len(used) >= 10
    for text in used:
        name, labels = _parse(text + " 0")
        assert name in exported, f"{name} is not in trioprobe's exposition: {sorted(exported)}"
        own = set(labels) - _SCRAPE_LABELS
        shapes = [set(candidate) for candidate in exported[name]]
        assert own in shapes, f"{name}: labels {sorted(own)}, trioprobe's: {shapes}"
        if "le" in labels:
            bounds = {candidate["le"] for candidate in exported[name]}
            assert labels["le"] in bounds, f"le={labels['le']} is not one of {bounds}"
