"""ProbeResult: the fields of its metrics, gauges, immutability, and the keeper's fast fold."""

from __future__ import annotations

import attrs
import pytest

from trioprobe.metrics import Distribution, EventMetrics, Float, Int, Kind, Map, String
from trioprobe.results import ProbeResult


def test_metrics_fields_success() -> None:
    r = ProbeResult("a", True, 0.25, timestamp=123.0)
    em = r.metrics()
    assert em.kind is Kind.CUMULATIVE
    assert em.timestamp == 123.0
    assert list(em.metrics) == ["total", "success", "timeouts", "latency"]
    assert em.metric("total") == Int(1)
    assert em.metric("success") == Int(1)
    assert em.metric("timeouts") == Int(0)
    assert em.metric("latency") == Float(0.25)  # seconds by default, the exported unit
    assert r.metrics(latency_unit=1e-3).metric("latency") == Float(pytest.approx(250.0))
    assert dict(em.labels) == {}


def test_metrics_fields_failure_and_timeout() -> None:
    r = ProbeResult("a", False, 0.5, timeout=True, error="timed out")
    em = r.metrics()
    assert em.metric("success") == Int(0)
    assert em.metric("timeouts") == Int(1)
    # Latency of a failed probe is not counted.
    assert em.metric("latency") == Float(0.0)
    assert ProbeResult("a", False).metrics().metric("timeouts") == Int(0)


def test_metrics_distribution_variant() -> None:
    template = Distribution.explicit([0, 10, 100])
    em = ProbeResult("a", True, 0.05).metrics(latency_unit=1e-3, latency_distribution=template)
    dist = em.metric("latency")
    assert isinstance(dist, Distribution)
    assert dist.bucket_counts == [0, 0, 1, 0]
    assert dist.sum == pytest.approx(50.0)
    assert template.count == 0  # the template is cloned, never filled
    failed = ProbeResult("a", False, 0.05).metrics(latency_distribution=template)
    assert failed.metric("latency").count == 0  # type: ignore[union-attr]


def test_metrics_extras_wrapped() -> None:
    codes = Map("code", {"200": 1})
    r = ProbeResult("a", True, extras={"n": 3, "f": 1.5, "s": "x", "resp-code": codes})
    em = r.metrics()
    assert em.metric("n") == Int(3)
    assert em.metric("f") == Float(1.5)
    assert em.metric("s") == String("x")
    assert em.metric("resp-code") == codes
    assert em.metric("resp-code") is not codes


def test_metrics_fresh_each_call() -> None:
    r = ProbeResult("a", True, 0.001, extras={"resp-code": Map("code", {"200": 1})})
    first = r.metrics()
    first.update(r.metrics())
    second = r.metrics()
    assert first is not second
    assert second.metric("total") == Int(1)
    assert second.metric("resp-code") == Map("code", {"200": 1})
    assert r.extras["resp-code"] == Map("code", {"200": 1})


def test_gauge_metrics() -> None:
    assert ProbeResult("a", True).gauge_metrics() is None
    em = ProbeResult("a", True, timestamp=5.0, gauges={"srtt": 0.002, "node": "n1"}).gauge_metrics()
    assert em is not None
    assert em.kind is Kind.GAUGE
    assert em.timestamp == 5.0
    assert em.metric("srtt") == Float(0.002)
    assert em.metric("node") == String("n1")


def test_immutable() -> None:
    extras = {"n": 1}
    r = ProbeResult("a", True, extras=extras)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        r.success = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.extras["n"] = 2  # type: ignore[index]
    extras["n"] = 5  # the caller's dict is copied
    assert r.extras["n"] == 1


@pytest.mark.parametrize(
    "results",
    [
        [ProbeResult("a", True, 0.001), ProbeResult("a", False, 0.5, timeout=True)],
        [ProbeResult("a", True, 0.001), ProbeResult("a", True, 0.003, extras={"n": 2})],
        [ProbeResult("a", False, extras={"n": 1}), ProbeResult("a", True, 0.002)],
    ],
)
@pytest.mark.parametrize("dist", [None, Distribution.explicit([0.0, 1000.0, 2000.0])])
def test_accumulate_equals_update(results: list[ProbeResult], dist: Distribution | None) -> None:
    slow = results[0].metrics(latency_distribution=dist)
    fast = results[0].metrics(latency_distribution=dist)
    for r in results[1:] * 3:
        slow.update(r.metrics(latency_distribution=dist))
        r.accumulate(fast, latency_distribution=dist)
    assert fast == slow


def test_accumulate_general_path_checks() -> None:
    acc = EventMetrics(Kind.CUMULATIVE, 1.0).add_metric("total", Float(1.0))
    with pytest.raises(Exception, match="cannot add Int"):
        ProbeResult("a", True).accumulate(acc)
    assert acc.metric("total") == Float(1.0)
