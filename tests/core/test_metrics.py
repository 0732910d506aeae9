"""The metrics model: values, EventMetrics, text and JSON forms (with hypothesis round-trips)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioprobe.metrics import (
    Distribution,
    EventMetrics,
    Float,
    Int,
    Kind,
    Map,
    MetricsError,
    String,
    Value,
    as_value,
    parse_value,
)

# -- values ----------------------------------------------------------------------------------


def test_int_ops() -> None:
    a = Int(5)
    b = a.clone()
    b.add(Int(3))
    assert (a.value, b.value) == (5, 8)
    assert b.subtract(a) == Int(3)
    assert Int(2).is_reset(Int(3))
    assert not Int(3).is_reset(Int(3))
    with pytest.raises(MetricsError, match="Int with Float"):
        a.add(Float(1.0))
    with pytest.raises(MetricsError):
        a.subtract(Float(1.0))


def test_float_ops() -> None:
    a = Float(1.5)
    b = a.clone()
    b.add(Float(2.25))
    assert (a.value, b.value) == (1.5, 3.75)
    assert b.subtract(a) == Float(2.25)
    assert Float(1.0).is_reset(Float(1.5))
    assert not Float(1.5).is_reset(Float(1.0))
    with pytest.raises(MetricsError, match="Float with Int"):
        a.add(Int(1))


def test_string_ops() -> None:
    s = String("v1")
    c = s.clone()
    assert c == s
    assert c is not s
    with pytest.raises(MetricsError, match="cannot be added"):
        s.add(String("v2"))
    assert s.subtract(String("v0")) == String("v1")
    assert not s.is_reset(String("zzz"))


def test_map_values_none_and_sorted() -> None:
    m = Map("code", None)
    assert m.values == {}
    m.increment("b")
    m.increment("a", 2)
    assert list(m.values.items()) == [("a", 2), ("b", 1)]
    assert str(m) == "map:code,a:2,b:1"


def test_map_ops() -> None:
    m = Map("code", {"500": 1, "200": 2})
    assert list(m.values) == ["200", "500"]  # kept sorted
    m.increment("404")
    m.increment("200", 3)
    assert m.values == {"200": 5, "404": 1, "500": 1}
    assert list(m.values) == ["200", "404", "500"]
    assert m.total == 7
    c = m.clone()
    c.increment("200")
    assert m.values["200"] == 5  # clone is independent
    other = Map("code", {"200": 1, "302": 2})
    m.add(other)
    assert m.values == {"200": 6, "302": 2, "404": 1, "500": 1}
    assert m.subtract(Map("code", {"200": 1})) == Map(
        "code", {"200": 5, "302": 2, "404": 1, "500": 1}
    )
    with pytest.raises(MetricsError, match="map 'validator'"):
        m.add(Map("validator", {"x": 1}))
    with pytest.raises(MetricsError):
        m.add(Int(1))
    # Resets: a key disappeared, or the total shrank.
    assert Map("code", {"200": 5}).is_reset(Map("code", {"200": 1, "500": 1}))
    assert Map("code", {"200": 1, "500": 1}).is_reset(Map("code", {"200": 3}))
    assert not Map("code", {"200": 3, "500": 1}).is_reset(Map("code", {"200": 3}))


def test_distribution_exponential_bounds() -> None:
    d = Distribution.exponential(base=2.0, scale=1.0, count=4)
    assert d.lower_bounds == (-math.inf, 0.0, 1.0, 2.0, 4.0, 8.0)
    assert d.bucket_counts == [0] * 6
    d2 = Distribution.exponential(base=10, scale=0.5, count=2)
    assert d2.lower_bounds == (-math.inf, 0.0, 0.5, 5.0)
    with pytest.raises(MetricsError, match=r"1\.01"):
        Distribution.exponential(base=1.0)
    with pytest.raises(MetricsError):
        Distribution.exponential(scale=0)
    with pytest.raises(MetricsError):
        Distribution.exponential(count=0)


def test_distribution_explicit_bounds_and_placement() -> None:
    d = Distribution.explicit([1, 5, 10])
    assert d.lower_bounds == (-math.inf, 1, 5, 10)
    # A sample equal to a bound goes into the bucket that starts at that bound.
    for sample in (-3, 0.999, 1, 4.99, 5, 10, 1000):
        d.add_sample(sample)
    assert d.bucket_counts == [2, 2, 1, 2]
    assert d.count == 7
    assert d.sum == pytest.approx(-3 + 0.999 + 1 + 4.99 + 5 + 10 + 1000)
    with pytest.raises(MetricsError, match="increase"):
        Distribution.explicit([1, 1, 2])
    with pytest.raises(MetricsError, match="-inf"):
        Distribution((0.0, 1.0))
    with pytest.raises(MetricsError, match="bucket counts"):
        Distribution((-math.inf, 0.0), [1])


def test_distribution_ops() -> None:
    d = Distribution.explicit([0, 10])
    d.add_sample(5)
    c = d.clone()
    c.add_sample(20)
    assert d.bucket_counts == [0, 1, 0]  # deep: the clone's counts are its own
    assert c.bucket_counts == [0, 1, 1]
    c.add(d)
    assert c.bucket_counts == [0, 2, 1]
    assert (c.count, c.sum) == (3, 30)
    delta = c.subtract(d)
    assert (delta.bucket_counts, delta.count, delta.sum) == ([0, 1, 1], 2, 25)
    assert d.is_reset(c)
    assert not c.is_reset(d)
    with pytest.raises(MetricsError, match="different bucket bounds"):
        d.add(Distribution.explicit([0, 11]))
    with pytest.raises(MetricsError):
        d.add(Int(1))


def test_percentiles() -> None:
    d = Distribution.explicit([0, 10, 20, 30])
    assert math.isnan(d.percentile(0.5))
    for _ in range(10):
        d.add_sample(5)  # bucket [0, 10)
    for _ in range(10):
        d.add_sample(15)  # bucket [10, 20)
    # Linear interpolation inside the bucket that holds the rank.
    assert d.percentile(0.5) == pytest.approx(10.0)
    assert d.percentile(0.25) == pytest.approx(5.0)
    assert d.percentile(0.75) == pytest.approx(15.0)
    assert d.percentile(1.0) == pytest.approx(20.0)
    assert d.percentile(0.0) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="quantile"):
        d.percentile(1.5)
    # Open-ended buckets report their finite edge.
    tail = Distribution.explicit([0, 10])
    tail.add_sample(99)
    assert tail.percentile(0.99) == 10
    head = Distribution.explicit([0, 10])
    head.add_sample(-5)
    assert head.percentile(0.5) == 0


def test_as_value() -> None:
    assert as_value(3) == Int(3)
    assert as_value(2.5) == Float(2.5)
    assert as_value("x") == String("x")
    m = Map("k", {"a": 1})
    wrapped = as_value(m)
    assert wrapped == m
    assert wrapped is not m
    with pytest.raises(MetricsError, match="booleans"):
        as_value(True)


# -- EventMetrics ----------------------------------------------------------------------------


def test_add_label_and_metric_first_wins_and_chain() -> None:
    em = EventMetrics(timestamp=10.0)
    returned = em.add_label("dst", "a").add_label("dst", "b").add_label("probe", "p")
    assert returned is em
    assert em.add_metric("total", Int(1)).add_metric("total", Int(99)) is em
    assert em.label("dst") == "a"
    assert em.label("missing") == ""
    assert em.metric("total") == Int(1)
    assert em.metric("missing") is None
    assert list(em.labels) == ["dst", "probe"]


def test_default_timestamp_is_wall_clock() -> None:
    import time

    before = time.time()
    em = EventMetrics()
    assert before <= em.timestamp <= time.time()
    assert em.kind is Kind.CUMULATIVE


def test_clone_is_deep() -> None:
    em = EventMetrics(Kind.CUMULATIVE, 1.0).add_label("dst", "a")
    em.add_metric("total", Int(1)).add_metric("codes", Map("code", {"200": 1}))
    em.add_metric("lat", Distribution.explicit([1.0]))
    c = em.clone()
    assert c == em
    c.add_label("extra", "x")
    c.metric("total").add(Int(5))  # type: ignore[union-attr]
    c.metric("codes").increment("500")  # type: ignore[union-attr]
    c.metric("lat").add_sample(3.0)  # type: ignore[union-attr]
    assert em.metric("total") == Int(1)
    assert em.metric("codes") == Map("code", {"200": 1})
    assert em.metric("lat").count == 0  # type: ignore[union-attr]
    assert "extra" not in em.labels


def _sample(kind: Kind = Kind.CUMULATIVE) -> EventMetrics:
    em = EventMetrics(kind, 1.0)
    em.add_metric("total", Int(2)).add_metric("lat", Float(1.5))
    em.add_metric("codes", Map("code", {"200": 2}))
    em.add_metric("dist", Distribution.explicit([1.0, 2.0]))
    return em


def test_update_cumulative_adds() -> None:
    acc = _sample()
    inc = _sample()
    inc.metric("dist").add_sample(1.5)  # type: ignore[union-attr]
    inc.add_metric("new", Int(7))
    acc.update(inc)
    assert acc.metric("total") == Int(4)
    assert acc.metric("lat") == Float(3.0)
    assert acc.metric("codes") == Map("code", {"200": 4})
    assert acc.metric("dist").bucket_counts == [0, 1, 0]  # type: ignore[union-attr]
    assert acc.metric("new") == Int(7)
    # Added metrics are clones: changing the source later does not leak into the accumulator.
    inc.metric("new").add(Int(1))  # type: ignore[union-attr]
    assert acc.metric("new") == Int(7)


def test_update_gauge_replaces() -> None:
    acc = EventMetrics(Kind.GAUGE, 1.0).add_metric("srtt", Float(1.0))
    acc.add_metric("ver", String("a"))
    new = EventMetrics(Kind.GAUGE, 2.0).add_metric("srtt", Float(0.5))
    new.add_metric("ver", String("b"))
    acc.update(new)
    assert acc.metric("srtt") == Float(0.5)
    assert acc.metric("ver") == String("b")
    assert acc.metric("srtt") is not new.metric("srtt")


@pytest.mark.parametrize(
    ("other", "match"),
    [
        (EventMetrics(Kind.GAUGE, 1.0).add_metric("total", Int(1)), "GAUGE"),
        (EventMetrics(Kind.CUMULATIVE, 1.0).add_metric("total", Float(1.0)), "cannot add Float"),
        (
            EventMetrics(Kind.CUMULATIVE, 1.0).add_metric("dist", Distribution.explicit([5.0])),
            "bucket bounds",
        ),
        (EventMetrics(Kind.CUMULATIVE, 1.0).add_metric("codes", Map("other")), "map 'other'"),
        (EventMetrics(Kind.CUMULATIVE, 1.0).add_metric("s", String("x")), "string"),
    ],
)
def test_update_mismatch_raises_and_leaves_unchanged(other: EventMetrics, match: str) -> None:
    acc = _sample().add_metric("s", String("v"))
    before = acc.clone()
    # Put a valid value first, so a part-way update would be visible.
    bad = EventMetrics(other.kind, 1.0).add_metric("lat", Float(1.0))
    for name, value in other.metrics.items():
        bad.add_metric(name, value)
    with pytest.raises(MetricsError, match=match):
        acc.update(bad)
    assert acc == before


def test_subtract_last_deltas() -> None:
    prev = _sample()
    cur = _sample()
    cur.update(_sample())
    cur.metric("dist").add_sample(0.5)  # type: ignore[union-attr]
    cur.add_label("dst", "a")
    delta = cur.subtract_last(prev)
    assert delta.kind is Kind.GAUGE
    assert delta.label("dst") == "a"
    assert delta.metric("total") == Int(2)
    assert delta.metric("lat") == Float(1.5)
    assert delta.metric("codes") == Map("code", {"200": 2})
    assert delta.metric("dist").count == 1  # type: ignore[union-attr]
    assert cur.metric("total") == Int(4)  # the input is untouched


@pytest.mark.parametrize(
    "reset",
    [
        lambda em: em.metric("total").__setattr__("value", 1),
        lambda em: em.metric("codes").values.clear(),
        lambda em: em.metric("codes").values.__setitem__("200", 1),
        lambda em: em.metric("dist").__setattr__("count", 0),
    ],
    ids=["int-drop", "map-key-missing", "map-total-shrink", "dist-count-drop"],
)
def test_subtract_last_reset_returns_current(reset: object) -> None:
    prev = _sample()
    prev.metric("dist").add_sample(1.0)  # type: ignore[union-attr]
    cur = prev.clone()
    cur.update(_sample())
    reset(cur)  # type: ignore[operator]
    out = cur.subtract_last(prev)
    assert out.kind is Kind.GAUGE
    assert list(out.metrics.items()) == list(cur.metrics.items())


def test_subtract_last_needs_cumulative() -> None:
    with pytest.raises(MetricsError, match="CUMULATIVE"):
        _sample(Kind.GAUGE).subtract_last(_sample())


# -- text form -------------------------------------------------------------------------------


def test_text_form_examples() -> None:
    em = EventMetrics(Kind.CUMULATIVE, 1700000000.5)
    em.add_label("ptype", "http").add_label("probe", "web").add_label("dst", "a b")
    em.add_metric("total", Int(10)).add_metric("latency", Float(1234.5))
    em.add_metric("resp-code", Map("code", {"200": 10, "503": 1}))
    em.add_metric("version", String('v "1"'))
    d = Distribution.explicit([0, 1.5])
    d.add_sample(1)
    em.add_metric("dist", d)
    assert str(em) == (
        '1700000000.5 labels=ptype=http,probe=web,dst="a b" total=10 latency=1234.5 '
        'resp-code=map:code,200:10,503:1 version="v \\"1\\"" '
        "dist=dist:sum:1.0|count:1|lb:-Inf,0,1.5|bc:0,1,0"
    )
    assert EventMetrics.parse(str(em)) == em
    assert str(EventMetrics(Kind.GAUGE, 5.0)) == "5.0"


def test_value_text_forms() -> None:
    assert str(Int(-3)) == "-3"
    assert str(Float(0.1)) == "0.1"
    assert str(Float(2.0)) == "2.0"
    assert parse_value("2.0") == Float(2.0)
    assert isinstance(parse_value("2"), Int)
    assert parse_value("map:code") == Map("code")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "notatime total=1",
        "1.0 total",
        "1.0 =5",
        "1.0 total=abc",
        "1.0 labels=novalue",
        '1.0 labels=k="unterminated',
        "1.0 codes=map:code,200",
        "1.0 d=dist:sum:1|count:1|lb:-Inf,0",
        "1.0 d=dist:sum:1|count:1|lb:-Inf,0|bc:1",
        "1.0 d=dist:sum:x|count:1|lb:-Inf|bc:1",
        '1.0 s="bad\\q"',
    ],
)
def test_malformed_lines_raise(line: str) -> None:
    with pytest.raises(MetricsError):
        EventMetrics.parse(line)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"kind": "NOPE", "timestamp": 1, "labels": {}, "metrics": {}},
        {"kind": "GAUGE", "timestamp": 1, "labels": {}, "metrics": {"x": True}},
        {"kind": "GAUGE", "timestamp": 1, "labels": {}, "metrics": {"x": [1]}},
        {"kind": "GAUGE", "timestamp": "t", "labels": {}, "metrics": {}},
    ],
)
def test_malformed_json_raises(data: dict[str, object]) -> None:
    with pytest.raises(MetricsError):
        EventMetrics.from_json(data)


# -- property tests --------------------------------------------------------------------------

# Label values and string values may hold anything: spaces, separators, quotes, unicode.
any_text = st.text(max_size=12)
# Label keys, metric names and map names/keys are identifiers in the text form: it quotes only
# label values and strings, so these may not hold whitespace or the separators , = " |.
ident = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), blacklist_characters=',="|:\\'
    ),
    min_size=1,
    max_size=8,
).filter(lambda s: s.split() == [s])
finite = st.floats(allow_nan=False, allow_infinity=False)
number = st.one_of(st.integers(-(10**12), 10**12), finite)


@st.composite
def distributions(draw: st.DrawFn) -> Distribution:
    bounds = draw(st.lists(finite, min_size=1, max_size=6, unique=True).map(sorted))
    d = Distribution.explicit(bounds)
    for sample in draw(st.lists(st.floats(-1e6, 1e6), max_size=10)):
        d.add_sample(sample)
    return d


values: st.SearchStrategy[Value] = st.one_of(
    st.integers(-(10**15), 10**15).map(Int),
    finite.map(Float),
    any_text.map(String),
    st.builds(Map, ident, st.dictionaries(ident, number, max_size=4)),
    distributions(),
)


@st.composite
def event_metrics(draw: st.DrawFn) -> EventMetrics:
    kind = draw(st.sampled_from(Kind))
    timestamp = draw(st.one_of(finite, st.integers(0, 2**40)))
    em = EventMetrics(kind, timestamp)
    for key, value in draw(st.dictionaries(ident, any_text, max_size=5)).items():
        em.add_label(key, value)
    names = ident.filter(lambda n: n != "labels")
    for name, value in draw(st.dictionaries(names, values, max_size=5)).items():
        em.add_metric(name, value)
    return em


@settings(max_examples=300, deadline=None)
@given(event_metrics())
def test_text_round_trip(em: EventMetrics) -> None:
    assert EventMetrics.parse(str(em), em.kind) == em


@settings(max_examples=300, deadline=None)
@given(event_metrics())
def test_json_round_trip(em: EventMetrics) -> None:
    import json

    assert EventMetrics.from_json(em.to_json()) == em
    # Through real JSON text too, as the lines surfacer writes it.
    assert EventMetrics.from_json(json.loads(json.dumps(em.to_json()))) == em
