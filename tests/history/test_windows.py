"""The window arithmetic on its own: which rows answer a window, and the SLO figures."""

from __future__ import annotations

import itertools

import pytest

from trioprobe.history import Counts, burn_rate, error_budget_remaining
from trioprobe.history._windows import DAY, HOUR, TIER_DAY, TIER_HOUR, TIER_MINUTE, plan

T0 = 1_700_000_000 // DAY * DAY  # a day boundary


def _covered(ranges: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    return sorted((lo, hi) for _, lo, hi in ranges)


@pytest.mark.parametrize(
    ("a", "b", "hours_done", "days_done"),
    [
        (T0 + 1234, T0 + 5 * DAY + 777, T0 + 5 * DAY, T0 + 5 * DAY),
        (T0 + 1234, T0 + 5 * DAY + 777, T0 + 4 * DAY + 7 * HOUR, T0 + 4 * DAY),
        (T0 + 59, T0 + 3 * HOUR, T0 + 2 * HOUR, T0),
        (T0 + 10, T0 + 50, T0 + HOUR, T0),
        (T0 + 3 * HOUR, T0 + 40 * DAY, T0 + 39 * DAY + 5 * HOUR, T0 + 39 * DAY),
    ],
)
def test_a_plan_covers_the_window_once(a: int, b: int, hours_done: int, days_done: int) -> None:
    ranges = plan(a, b, hours_done, days_done)
    spans = _covered(ranges)
    # Contiguous, no overlap, exactly [a, b).
    assert spans[0][0] == a
    assert spans[-1][1] == b
    assert all(x[1] == y[0] for x, y in itertools.pairwise(spans))
    for tier, lo, hi in ranges:
        if tier == TIER_DAY:
            assert lo % DAY == 0
            assert hi % DAY == 0
            assert hi <= days_done
        if tier == TIER_HOUR:
            assert lo % HOUR == 0
            assert hi % HOUR == 0
            assert hi <= hours_done


def test_the_coarsest_rows_answer_the_middle() -> None:
    ranges = plan(T0 + 1800, T0 + 3 * DAY + 600, T0 + 3 * DAY, T0 + 3 * DAY)
    assert ranges == [
        (TIER_DAY, T0 + DAY, T0 + 3 * DAY),
        (TIER_HOUR, T0 + HOUR, T0 + DAY),
        (TIER_MINUTE, T0 + 1800, T0 + HOUR),
        (TIER_MINUTE, T0 + 3 * DAY, T0 + 3 * DAY + 600),
    ]


def test_slo_figures() -> None:
    # 30 days at one probe a minute with 0.999: 43.2 failures allowed.
    month = Counts(43200, 43200 - 21)
    assert error_budget_remaining(month, 0.999) == pytest.approx(1 - 21 / 43.2)
    hour = Counts(60, 59)
    assert burn_rate(hour, 0.999) == pytest.approx((1 / 60) / 0.001)
    assert burn_rate(Counts(), 0.999) is None
    assert error_budget_remaining(Counts(), 0.999) is None
    assert Counts(4, 3).uptime == 0.75
    assert Counts().uptime is None


def test_config_history_table_and_slo(tmp_path: object) -> None:
    from pathlib import Path

    from trioprobe.config import ConfigError, parse_config

    base = Path(str(tmp_path))
    probe = {"name": "p", "type": "tcp", "targets": ["127.0.0.1:1"], "slo": 0.999}
    config = parse_config({"probe": [probe], "history": {}}, base_dir=base)
    assert config.history is not None
    assert config.history.path == str(base / "trioprobe-history.sqlite")
    assert config.history.rollup == 60
    assert config.probes[0][0].slo == 0.999
    assert parse_config({"probe": [probe]}, base_dir=base).history is None
    with pytest.raises(ConfigError) as err:
        parse_config(
            {"probe": [{**probe, "slo": 1.5}], "history": {"rollup": 7, "keep_hours_days": 0}},
            base_dir=base,
        )
    text = str(err.value)
    assert "probe[0].slo: expected a ratio between 0 and 1" in text
    assert "history.rollup: expected seconds that divide an hour" in text
    assert "history.keep_hours_days: expected at least 1, got 0" in text
    with pytest.raises(ConfigError, match="keep_daze"):
        parse_config({"probe": [probe], "history": {"keep_daze": 1}}, base_dir=base)
