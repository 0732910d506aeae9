"""Prometheus-style durations (``5s``, ``500ms``, ``1h30m``) wherever seconds are accepted, and
"did you mean" for misspelt keys and types, each problem on one line (issue 25 item 7)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from trioprobe._durations import parse_duration
from trioprobe.cli import main
from trioprobe.config import ConfigError, parse_config

PROBE = '[[probe]]\nname = "a"\ntype = "http"\ntargets = ["http://x/"]\n'


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("500ms", 0.5),
        ("1m", 60.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("2w", 14 * 86400.0),
        ("1m30s500ms", 90.5),
        ("1.5s", 1.5),
        ("250us", 250e-6),
        ("5", 5.0),
        ("0.25", 0.25),
        (" 2s ", 2.0),
        ("-1s", -1.0),  # kept, so the range check can say "got -1.0"
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert math.isclose(parse_duration(text), seconds)


@pytest.mark.parametrize(
    "text", ["", "s", "5x", "fast", "30m1h", "1m1m", "1h 30m", "nan", "inf", "1e999", "5 s"]
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration such as 5s"):
        parse_duration(text)


def test_config_accepts_durations_in_every_seconds_key() -> None:
    config = parse_config(
        {
            "shutdown_grace": "1m",
            "probe": [
                {
                    "name": "a",
                    "type": "http",
                    "targets": ["http://x/"],
                    "interval": "5s",
                    "timeout": "500ms",
                    "stats_interval": "1m",
                }
            ],
            "surfacer": [{"type": "prometheus", "expiry": "1h30m"}],
            "alert": [{"name": "x", "repeat_interval": "2h", "max_latency": "250ms"}],
            "status": {"refresh": "10s"},
        }
    )
    spec, _ = config.probes[0]
    assert (spec.interval, spec.timeout, spec.stats_interval) == (5.0, 0.5, 60.0)
    assert config.shutdown_grace == 60.0
    assert config.surfacers[0][1].expiry == 5400.0
    assert (config.alerts[0].repeat_interval, config.alerts[0].max_latency) == (7200.0, 0.25)
    assert config.status is not None
    assert config.status.refresh == 10


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('interval = "5x"\n', "probe[0].interval: expected a duration such as 5s"),
        ('interval = "0s"\n', "probe[0].interval: expected a finite number of seconds >= 0.001"),
        ('[status]\nrefresh = "1500ms"\n', "status.refresh: expected a whole number of seconds"),
        # A key that is no duration keeps its strict type check.
        ('latency_buckets = { base = "2s" }\n', "probe[0].latency_buckets.base: invalid value"),
    ],
)
def test_bad_durations_one_line_each(extra: str, expected: str) -> None:
    import tomllib

    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(PROBE + extra))
    [line] = str(info.value).splitlines()
    assert line.startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (PROBE + "intervl = 5\n", "probe[0].intervl: unknown key; did you mean 'interval'?"),
        (
            PROBE + "body_regx = 'x'\n",
            "probe[0].body_regx: unknown key; did you mean 'body_regex'?",
        ),
        (
            "shutdown_grac = 1\n" + PROBE,
            "shutdown_grac: unknown key; did you mean 'shutdown_grace'?",
        ),
        (
            PROBE.replace('"http"', '"htp"'),
            "probe[0].type: unknown probe type 'htp'; did you mean 'http'?",
        ),
        (
            PROBE + "[[surfacer]]\ntype = 'promethus'\n",
            "surfacer[0].type: unknown surfacer type 'promethus'; did you mean 'prometheus'?",
        ),
        (
            PROBE + "[[surfacer]]\ntype = 'prometheus'\nprot = 1\n",
            "surfacer[0].prot: unknown key; did you mean 'port'?",
        ),
        (
            PROBE + "[[alert]]\nname = 'x'\nfailure_treshold = 2\n",
            "alert[0].failure_treshold: unknown key; did you mean 'failure_threshold'?",
        ),
        (PROBE + "[status]\nprot = 1\n", "status.prot: unknown key; did you mean 'port'?"),
        (
            PROBE + "latency_buckets = { bound = [1.0] }\n",
            "probe[0].latency_buckets.bound: unknown key; did you mean 'bounds'?",
        ),
        # Nested tables too; the misspelt required `prefix` is not also "required field missing".
        (
            PROBE.replace('targets = ["http://x/"]\n', "")
            + 'etcd_sd = { endpoints = ["http://127.0.0.1:2379"], prefx = "/t/" }\n',
            "probe[0].etcd_sd.prefx: unknown key; did you mean 'prefix'?",
        ),
        # A misspelt required key is one problem, not "unknown key" plus "required field missing".
        (
            '[[probe]]\nname = "d"\ntype = "dns"\ntargets = ["127.0.0.1:53"]\nqnam = "x"\n',
            "probe[0].qnam: unknown key; did you mean 'query_name'?",
        ),
    ],
)
def test_did_you_mean_in_one_line(text: str, expected: str) -> None:
    import tomllib

    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text))
    assert str(info.value).splitlines() == [expected]


def test_unknown_keys_are_one_line_each_in_file_order() -> None:
    import tomllib

    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(PROBE + "zzz = 1\nintervl = 2\n"))
    lines = str(info.value).splitlines()
    assert [line.split(":")[0] for line in lines] == ["probe[0].zzz", "probe[0].intervl"]


def test_cli_prefixes_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(PROBE + "intervl = 5\ntimeout = 'soon'\n")
    assert main(["check", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"trioprobe: error: {path}: probe[0].") for line in lines)


@pytest.mark.parametrize(
    ("argv", "ok"),
    [
        (["demo", "--duration", "1m30s", "--refresh", "500ms"], True),
        (["demo", "--duration", "soon"], False),
        (["logping", "memory", "--interval", "250ms"], True),
        (["serve", "zmq", "--uptime", "2h"], True),
    ],
)
def test_cli_flags_take_durations(argv: list[str], ok: bool) -> None:
    from trioprobe.cli import build_parser

    if ok:
        args = build_parser().parse_args(argv)
        values = [v for v in vars(args).values() if isinstance(v, float)]
        assert any(v in (90.0, 0.5, 0.25, 7200.0) for v in values)
    else:
        assert main(argv) == 2
