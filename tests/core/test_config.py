"""Config loading: a full valid config, every kind of error, and the re-read targets file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from trioprobe.config import (
    MAX_CONFIG_BYTES,
    MAX_TARGETS_BYTES,
    ConfigError,
    LatencyBuckets,
    TargetsFile,
    load_config,
    parse_config,
    parse_targets,
)
from trioprobe.probes import http_probe as http
from trioprobe.surfacers import lines, prometheus

FULL = """
shutdown_grace = 2.0

[[probe]]
name = "web"
type = "http"
targets = ["http://127.0.0.1:1/", "http://127.0.0.1:2/"]
interval = 1.0
timeout = 0.5
stats_interval = 5.0
latency_unit = "ms"
labels = { zone = "z1" }
latency_buckets = { bounds = [1.0, 10.0] }
expected_codes = [200, 204]
body_regex = "ok"

[[probe]]
name = "api"
type = "http"
targets_file = "targets.txt"
interval = 20

[[surfacer]]
type = "lines"
format = "json"
path = "out.jsonl"

[[surfacer]]
type = "prometheus"
port = 0
buffer = 50
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "probe.toml"
    path.write_text(text)
    return path


def test_full_config(tmp_path: Path) -> None:
    (tmp_path / "targets.txt").write_text("http://127.0.0.1:3/\n")
    config = load_config(_write(tmp_path, FULL))
    assert config.shutdown_grace == 2.0
    assert config.base_dir == tmp_path
    (web, web_opts), (api, api_opts) = config.probes
    assert web.name == "web"
    assert web.targets == ("http://127.0.0.1:1/", "http://127.0.0.1:2/")
    assert (web.interval, web.timeout, web.export_interval) == (1.0, 0.5, 5.0)
    assert web.latency_unit == "ms"
    assert web.labels == {"zone": "z1"}
    assert web.latency_buckets == LatencyBuckets(bounds=(1.0, 10.0))
    assert web_opts == http.Options(expected_codes=(200, 204), body_regex="ok")
    assert api.targets_file == "targets.txt"
    assert api.interval == 20.0
    # Default export interval: max(10 s, interval, timeout), as cloudprober.
    assert api.export_interval == 20.0
    assert api_opts == http.Options()
    (lines_spec, lines_opts), (prom_spec, prom_opts) = config.surfacers
    assert (lines_spec.type, lines_spec.buffer) == ("lines", 10000)
    # Relative file paths are resolved from the config's folder, like targets_file.
    assert lines_opts == lines.Options(path=str(tmp_path / "out.jsonl"), format="json")
    assert prom_spec.buffer == 50
    assert prom_opts == prometheus.Options(port=0)


def test_default_export_interval(tmp_path: Path) -> None:
    text = '[[probe]]\nname = "a"\ntype = "http"\ntargets = ["http://x/"]\n'
    ((spec, _),) = load_config(_write(tmp_path, text)).probes
    assert (spec.interval, spec.timeout, spec.export_interval) == (2.0, 1.0, 10.0)


PROBE = '[[probe]]\nname = "a"\ntype = "http"\ntargets = ["http://x/"]\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (PROBE + "bogus = 1\n", "probe[0].bogus: unknown key"),
        ("colour = 1\n" + PROBE, "colour: unknown key"),
        (
            PROBE + '[[surfacer]]\ntype = "lines"\ncolour = "red"\n',
            "surfacer[0].colour: unknown key",
        ),
        (PROBE + 'interval = "fast"\n', "probe[0].interval: expected a duration such as 5s"),
        (PROBE + 'expected_codes = "200"\n', "probe[0].expected_codes: invalid value for type"),
        (PROBE.replace('["http://x/"]', '"http://x/"'), "probe[0].targets: invalid value"),
        (PROBE + "interval = true\n", "probe[0].interval: invalid value for type"),
        (PROBE + '[[surfacer]]\ntype = "prometheus"\nport = "80"\n', "surfacer[0].port:"),
        (PROBE.replace('"http"', '"gopher"'), "probe[0].type: unknown probe type 'gopher'"),
        (PROBE + '[[surfacer]]\ntype = "pigeon"\n', "surfacer[0].type: unknown surfacer type"),
        (PROBE + "interval = 5\nstats_interval = 2\n", "probe[0].stats_interval: 2.0s is shorter"),
        (PROBE + 'interval = 1\ntick_slot = "2s"\n', "probe[0].tick_slot: 2.0s is longer"),
        (PROBE + "tick_slot = -0.01\n", "probe[0].tick_slot: expected a finite number of seconds"),
        (PROBE + "tick_slot = 5e-324\n", "probe[0].tick_slot: expected 0 (a timer per target) or"),
        (PROBE + "tick_slot = 0.0005\n", "probe[0].tick_slot: expected 0 (a timer per target) or"),
        (
            PROBE + "interval = 0\n",
            "probe[0].interval: expected a finite number of seconds >= 0.001",
        ),
        ('[[probe]]\nname = "a"\ntype = "http"\n', "probe[0]: no targets"),
        (
            PROBE + 'dns_sd = ["a.example"]\ndns_sd_type = "A"\n',
            "probe[0].dns_sd_port: required with dns_sd_type = 'A'",
        ),
        (PROBE + 'http_sd = "ftp://x/"\n', "probe[0].http_sd: expected an http:// or https://"),
        (PROBE + 'etcd_sd = { endpoints = [], prefix = "" }\n', "probe[0].etcd_sd.prefix:"),
        (PROBE + PROBE, "probe[1].name: duplicate probe name 'a'"),
        ("shutdown_grace = 1\n", "probe: no probes configured"),
        (PROBE + "latency_buckets = { base = 1.0 }\n", "probe[0].latency_buckets.base:"),
        (PROBE + 'body_regex = "("\n', "body_regex is not a valid regular expression"),
        ("[[probe]\n", "invalid TOML"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert expected in message
    for line in message.splitlines():
        assert line.startswith(f"{path}: ")


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    text = PROBE + 'interval = "x"\nbogus = 1\n' + '[[surfacer]]\ntype = "pigeon"\n'
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    message = str(info.value)
    assert "probe[0].interval" in message
    assert "bogus" in message
    assert "surfacer[0].type" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="cannot read config") as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")


def test_parse_targets() -> None:
    text = "a\n  b  # comment\n\n# only a comment\na\nc\n"
    assert parse_targets(text) == ("a", "b", "c")


def test_targets_file_reread(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "targets.txt"
    path.write_text("a\nb\n")
    targets = TargetsFile(path)
    assert targets() == ("a", "b")
    path.write_text("a\nb\nc\n")
    assert targets() == ("a", "b", "c")
    # Same size, new mtime: still noticed.
    path.write_text("x\ny\nz\n")
    os.utime(path, ns=(1, 1))
    assert targets() == ("x", "y", "z")
    # A bad file keeps the last good list, and says so once.
    path.write_bytes(b"\xff\xfe not utf-8\n")
    with caplog.at_level(logging.WARNING, logger="trioprobe.config"):
        assert targets() == ("x", "y", "z")
        assert targets() == ("x", "y", "z")
        path.unlink()
        assert targets() == ("x", "y", "z")
    assert caplog.text.count("cannot re-read targets file") == 1
    path.write_text("back\n")
    assert targets() == ("back",)


def test_targets_file_missing_at_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        TargetsFile(tmp_path / "missing.txt")


def test_relative_surfacer_paths_resolve_from_the_config_folder(tmp_path: Path) -> None:
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    path = config_dir / "c.toml"
    path.write_text(
        '[[probe]]\nname = "w"\ntype = "http"\ntargets = ["http://127.0.0.1:9/"]\n'
        '[[surfacer]]\ntype = "lines"\npath = "out/metrics.txt"\n'
        '[[surfacer]]\ntype = "lines"\n'
        '[[surfacer]]\ntype = "influxdb"\nqueue_dir = "/abs/queue"\n'
    )
    config = load_config(path)
    (_, relative), (_, stdout), (_, influx) = config.surfacers
    assert relative.path == str(config_dir / "out/metrics.txt")
    assert stdout.path == "-"
    assert influx.queue_dir == "/abs/queue"


@pytest.mark.parametrize("key", ["interval", "timeout", "stats_interval"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_durations_are_rejected(key: str, value: str) -> None:
    probe = {"name": "w", "type": "http", "targets": ["http://x/"], key: float(value)}
    with pytest.raises(ConfigError, match=rf"probe\[0\]\.{key}: expected a finite number"):
        parse_config({"probe": [probe]})


INFLUX = '[[surfacer]]\ntype = "influxdb"\nqueue_dir = "q"\n'
PROMETHEUS = '[[surfacer]]\ntype = "prometheus"\nport = 0\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Each of these was accepted by `check` and failed at run time (issue 12, item 4).
        (PROBE + INFLUX + "batch_interval = nan\n", "surfacer[0].batch_interval: expected"),
        (PROBE + INFLUX + "drain_timeout = nan\n", "surfacer[0].drain_timeout: expected a finite"),
        (PROBE + INFLUX + "max_age = nan\n", "surfacer[0].max_age: expected a finite"),
        (PROBE + INFLUX + "request_timeout = -1\n", "surfacer[0].request_timeout: expected"),
        (PROBE + INFLUX + "purge_interval = inf\n", "surfacer[0].purge_interval: expected"),
        (PROBE + PROMETHEUS + "expiry = -1\n", "surfacer[0].expiry: expected a finite number"),
        (PROBE + PROMETHEUS.replace("0", "70000"), "surfacer[0].port: expected a port number"),
        (PROBE + "interval = 5e-324\n", "probe[0].interval: expected a finite number of seconds"),
        (
            PROBE + "timeout = 1e300\n",
            "probe[0].timeout: expected a finite number of seconds >= 0.001",
        ),
        (
            PROBE + "[probe.latency_buckets]\ncount = 1000000000\n",
            "probe[0].latency_buckets.count: expected an integer >= 1 and <= 1000",
        ),
        (
            PROBE + "[probe.latency_buckets]\nbase = nan\n",
            "probe[0].latency_buckets.base: expected a finite number >= 1.01",
        ),
        (
            PROBE + "[probe.latency_buckets]\nbase = 1e6\ncount = 1000\n",
            "probe[0].latency_buckets: scale * base ** (count - 1) is too large",
        ),
        (
            PROBE + "latency_buckets = { bounds = [1.0, nan] }\n",
            "probe[0].latency_buckets.bounds[1]: expected a finite number >= 0",
        ),
        (PROBE + "expected_codes = [200, 9999]\n", "probe[0].expected_codes[1]: expected an HTTP"),
        (PROBE.replace('"http"', '"zmq"') + "retries = 0\n", "probe[0]"),
        (PROBE.replace('"http"', '"logping"') + "ping_interval = nan\n", "probe[0].ping_interval"),
        (PROBE + "shutdown_grace = nan\n", "probe[0].shutdown_grace: unknown key"),
        ("shutdown_grace = nan\n" + PROBE, "shutdown_grace: expected a finite number of seconds"),
        (PROBE + '[[surfacer]]\ntype = "lines"\nbuffer = 0\n', "surfacer[0].buffer: expected"),
    ],
)
def test_absurd_numbers_are_rejected(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert expected in message
    assert all(line.startswith(f"{path}: ") for line in message.splitlines())


def test_zero_drain_and_grace_are_fine(tmp_path: Path) -> None:
    text = "shutdown_grace = 0\n" + PROBE + INFLUX + "drain_timeout = 0\n"
    config = load_config(_write(tmp_path, text))
    assert config.shutdown_grace == 0.0
    assert config.surfacers[0][1].drain_timeout == 0.0


def test_deeply_nested_toml_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply") as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")


def test_config_size_is_bounded(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"larger than the {MAX_CONFIG_BYTES}-byte limit"):
        load_config("/dev/zero")
    big = tmp_path / "big.toml"
    big.write_text(PROBE + "#" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError, match=r"cannot read config: .*byte limit"):
        load_config(big)


def test_targets_file_must_be_a_regular_file(tmp_path: Path) -> None:
    # A device (or a FIFO, see tests/targets) is refused before any read could block.
    text = '[[probe]]\nname = "a"\ntype = "http"\ntargets_file = "/dev/zero"\n'
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    assert str(info.value) == (
        f"{tmp_path / 'probe.toml'}: probe[0].targets_file: cannot read /dev/zero: "
        "not a regular file (a character device)"
    )
    with pytest.raises(OSError, match="not a regular file"):
        TargetsFile(Path("/dev/zero"))


def test_targets_file_size_is_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"#" * (MAX_TARGETS_BYTES + 1))
    text = '[[probe]]\nname = "a"\ntype = "http"\ntargets_file = "big.txt"\n'
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    assert str(info.value) == (
        f"{tmp_path / 'probe.toml'}: probe[0].targets_file: cannot read {big}: "
        f"larger than the {MAX_TARGETS_BYTES}-byte limit"
    )


def test_missing_targets_file_names_config_and_key(tmp_path: Path) -> None:
    text = '[[probe]]\nname = "a"\ntype = "http"\ntargets_file = "gone.txt"\n'
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: probe[0].targets_file: cannot read {tmp_path / 'gone.txt'}: "
        "No such file or directory"
    )


def test_two_users_of_one_queue_directory_are_refused(tmp_path: Path) -> None:
    # Found by the config fuzz test in a soak run: `check` accepted two influxdb surfacers on one
    # queue_dir, and `run` then failed at start-up on the queue's lock.
    influx = {"type": "influxdb", "url": "http://127.0.0.1:9", "queue_dir": str(tmp_path / "q")}
    alert = {
        "name": "a",
        "webhook": "http://127.0.0.1:9/hook",
        "webhook_queue_dir": str(tmp_path / "q"),
    }
    table = {
        "probe": [{"name": "p", "type": "http", "targets": ["http://127.0.0.1:9/"]}],
        "surfacer": [influx, dict(influx)],
        "alert": [alert],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(table)
    assert str(caught.value).splitlines() == [
        f"surfacer[1].queue_dir: {tmp_path / 'q'} is also surfacer[0].queue_dir's queue; a queue "
        "directory has one user (give each its own queue_dir)",
        f"alert 'a': webhook_queue_dir: {tmp_path / 'q'} is also surfacer[0].queue_dir's queue; a "
        "queue directory has one user (give each its own queue_dir)",
    ]
    # Each on its own directory (the default ones included): fine.
    table["surfacer"] = [influx, {**influx, "queue_dir": str(tmp_path / "r")}]
    table["alert"] = [{"name": "a", "webhook": "http://127.0.0.1:9/hook"}]
    parse_config(table)
