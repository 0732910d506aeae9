"""Issue 24 item 8 and issue 25 item 4: what one target costs in /metrics, and its names.

An http target exports a basic set by default (latency, probes, success, timeouts, up,
failures by reason, status codes: well under 40 series); the phase histograms and connection
counts come with ``detail = "full"``. ``trioprobe check`` prints the count per target, which
must match what is rendered. Durations end in ``_seconds``, and no built-in sum of durations is
exported as a ``_seconds_total`` counter.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import pytest
import trio

from trioprobe.cli import main
from trioprobe.metrics import Distribution, EventMetrics, Int, Kind
from trioprobe.probes.http_probe import HTTPProbe, Options
from trioprobe.surfacers._naming import (
    BUILTIN_EXPORTS,
    CORE_EXPORTS,
    exports_for,
    family_for,
    series_per_target,
)
from trioprobe.surfacers.prometheus import render

from ..probing.test_http_transport import _serve_h11

GUARD = 30
BUCKETS = Distribution.exponential(base=2.0, scale=0.001, count=11)  # 12 bounds with 0


async def _exposition(url: str, detail: str) -> str:
    """Five probes of one target folded as the stats keeper folds them, then rendered."""
    probe = HTTPProbe(Options(detail=detail), list, interval=1.0, timeout=10.0)
    try:
        with trio.fail_after(GUARD):
            results = [await probe.probe_once(url) for _ in range(5)]
    finally:
        await probe._clients.aclose()
    assert all(r.success for r in results), [r.error for r in results]
    em = results[0].metrics(latency_distribution=BUCKETS)
    for result in results[1:]:
        result.accumulate(em, latency_distribution=BUCKETS)
    em.add_label("probe", "web").add_label("dst", url)
    up = EventMetrics(Kind.GAUGE, 1.0).add_label("probe", "web").add_label("dst", url)
    up.add_metric("up", Int(1))
    return render([em, up])


def _samples(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


async def test_basic_is_the_default_and_small(nursery: trio.Nursery) -> None:
    listeners = await nursery.start(partial(trio.serve_tcp, _serve_h11, 0, host="127.0.0.1"))
    url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/health"
    assert Options().detail == "basic"
    basic = await _exposition(url, "basic")
    full = await _exposition(url, "full")
    basic_n, full_n = len(_samples(basic)), len(_samples(full))
    print(
        f"\nseries per http target: basic {basic_n} ({len(basic.encode())} bytes), "
        f"full {full_n} ({len(full.encode())} bytes); latency histogram of 12 bounds"
    )
    assert basic_n <= 40
    assert "phase_" not in basic
    assert "connections" not in basic
    for name in ("latency_seconds_bucket", "probes_total", "success_total", "up", "resp_code"):
        assert f"trioprobe_{name}" in basic
    assert "trioprobe_phase_ttfb_seconds_bucket" in full
    assert full_n > basic_n + 80
    # What check prints (for an https target: the TLS phase and gauges are counted too).
    bounds = tuple(BUCKETS.lower_bounds[1:])
    for detail, count in (("basic", basic_n), ("full", full_n)):
        options = Options(detail=detail)
        assert series_per_target("http", options, bounds, https=False) == count, detail
        assert series_per_target("http", options, bounds) == count + 2 + 24 * (detail == "full")


def test_check_prints_series_per_target(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[[probe]]\nname = "web"\ntype = "http"\ntargets = ["http://127.0.0.1:9/"]\n'
        '[[probe]]\nname = "all"\ntype = "http"\ndetail = "full"\n'
        'targets = ["http://127.0.0.1:9/"]\n'
    )
    assert main(["check", str(config)]) == 0
    out = capsys.readouterr().out
    basic = series_per_target("http", Options(), None)
    full = series_per_target("http", Options(detail="full"), None)
    assert "probe 'web' (http): 1 target(s)" in out
    assert f", {basic} series per target" in out
    assert f", {full} series per target" in out
    assert basic <= 40 < full


def test_detail_is_checked() -> None:
    with pytest.raises(ValueError, match="detail: 'everything' is not one of basic, full"):
        Options(detail="everything")


_DURATION_WORDS = ("latency", "duration", "rtt", "phase_", "lag", "delay")


@pytest.mark.parametrize("probe_type", sorted(BUILTIN_EXPORTS))
def test_built_in_names_follow_the_naming_rule(probe_type: str) -> None:
    """Durations are ``_seconds``; a duration is never a ``_seconds_total`` counter (a sum with
    no count: it cannot be turned into an average)."""
    exports = {**CORE_EXPORTS, **BUILTIN_EXPORTS[probe_type]}
    for name, (value, kind) in exports.items():
        family = family_for(name, value, kind)
        exported = "trioprobe_" + family.name + ("_total" if family.type == "counter" else "")
        assert not exported.endswith("_seconds_total"), (probe_type, name, exported)
        if any(word in name for word in _DURATION_WORDS):
            assert family.unit == "seconds", (probe_type, name, exported)
            assert family.name.endswith("_seconds"), (probe_type, name, exported)


def test_phase_histograms_are_named_in_seconds() -> None:
    exports = exports_for("http", Options(detail="full"))
    family = family_for("phase_ttfb", *exports["phase_ttfb"])
    assert family.name == "phase_ttfb_seconds"
    assert family.type == "histogram"


def test_tcp_step_times_are_histograms() -> None:
    value, kind = BUILTIN_EXPORTS["tcp"]["connect_latency"]
    family = family_for("connect_latency", value, kind)
    assert (family.name, family.type) == ("connect_latency_seconds", "histogram")
    assert isinstance(value, Distribution)
    assert value.lower_bounds == (-math.inf,)
