"""Issue 24 item 0: configs that ``check`` accepted and that then crashed a run.

Host names the resolver's IDNA encoding refuses (an empty or 64-character label), format specs
in command templates, and an external program printing a 310-digit number. Each is refused
where it is written (``check`` names the key or the file's line) and, if it reaches a probe
anyway, is that target's failure with a reason. The fuzz tests keep it so.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trioprobe._templates import TemplateError, check_template, render_template
from trioprobe._tls import load_ssl_context
from trioprobe._urls import host_name_problem
from trioprobe.config import ConfigError, TargetsFile, load_config, parse_config
from trioprobe.probes import etcd_probing, http_probe, ping, probe_types, tcp, udp
from trioprobe.probes._net import split_host_port
from trioprobe.probes.external import ExternalProbe, parse_output
from trioprobe.probes.external import Options as ExternalOptions
from trioprobe.results import ProbeResult

GUARD = 30
LONG = "a" * 64
# Each probe type named in the issue, with a target whose host the resolver cannot encode.
BAD_TARGETS: dict[str, list[str]] = {
    "tcp": ["a..b:80", f"{LONG}.test:80"],
    "udp": ["a..b:80", f"{LONG}.test:80"],
    "http": ["http://a..b:80/", f"http://{LONG}.test/"],
    "ping": ["a..b", f"{LONG}.test"],
    "etcd_probing": ["http://a..b:2379", f"https://{LONG}.test/"],
}


@pytest.mark.parametrize("type_name", sorted(BAD_TARGETS))
@pytest.mark.parametrize("index", [0, 1])
def test_check_names_a_target_with_a_bad_host_label(type_name: str, index: int) -> None:
    target = BAD_TARGETS[type_name][index]
    table = {"probe": [{"name": "p", "type": type_name, "targets": ["127.0.0.1:9", target]}]}
    if type_name in ("http", "etcd_probing"):
        table["probe"][0]["targets"][0] = "http://127.0.0.1:9/"
    if type_name == "ping":
        table["probe"][0]["targets"][0] = "127.0.0.1"
    with pytest.raises(ConfigError) as info:
        parse_config(table)
    assert f"probe[0].targets[1]: bad target {target!r}" in str(info.value)
    assert "label" in str(info.value)


@pytest.mark.parametrize("type_name", sorted(BAD_TARGETS))
def test_check_names_the_line_of_a_targets_file(type_name: str, tmp_path: Path) -> None:
    good = {"ping": "127.0.0.1", "tcp": "127.0.0.1:9", "udp": "127.0.0.1:9"}.get(
        type_name, "http://127.0.0.1:9/"
    )
    (tmp_path / "targets.txt").write_text(f"{good}\n# a comment\n{BAD_TARGETS[type_name][0]}\n")
    config = tmp_path / "trioprobe.toml"
    config.write_text(
        f'[[probe]]\nname = "p"\ntype = "{type_name}"\ntargets_file = "targets.txt"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert f"probe[0].targets_file: {tmp_path / 'targets.txt'}:3: bad target" in str(info.value)


def test_a_reread_targets_file_skips_a_bad_line_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "targets.txt"
    path.write_text("127.0.0.1:9\n")
    targets = TargetsFile(path, check=tcp.check_target)
    path.write_text(f"127.0.0.1:9\n{LONG}.test:80\n127.0.0.1:10\n")
    assert list(targets()) == ["127.0.0.1:9", "127.0.0.1:10"]
    assert f"{LONG}.test:80" in targets.errors


def _failed(result: ProbeResult, *words: str) -> None:
    assert not result.success
    assert result.error is not None
    assert all(word in result.error for word in words), result.error


# A target that check would refuse reaches the probe anyway (a plug-in's targets function, a
# library user): it is that target's failure, never an exception out of probe_once.


@pytest.mark.parametrize("target", BAD_TARGETS["tcp"])
async def test_tcp_probe_fails_a_bad_host_at_probe_time(target: str) -> None:
    probe = tcp.TCPProbe(tcp.Options(), list, interval=1.0, timeout=5.0)
    with trio.fail_after(GUARD):
        result = await probe.probe_once(target)
    _failed(result, "label")
    errors = result.extras["errors"]
    assert getattr(errors, "values", {}).get("dns") == 1


@pytest.mark.parametrize("target", BAD_TARGETS["udp"])
async def test_udp_probe_fails_a_bad_host_at_probe_time(target: str) -> None:
    probe = udp.UDPProbe(udp.Options(), list, interval=1.0, timeout=5.0)
    async with trio.open_nursery() as nursery:
        probe._nursery = nursery
        with trio.fail_after(GUARD):
            result = await probe.probe_once(target)
        nursery.cancel_scope.cancel()
    _failed(result, "label")


@pytest.mark.parametrize("target", BAD_TARGETS["ping"])
async def test_ping_probe_fails_a_bad_host_at_probe_time(target: str) -> None:
    probe = ping.PingProbe(ping.Options(), list, interval=1.0, timeout=5.0)
    with trio.fail_after(GUARD):
        result = await probe.probe_once(target)
    _failed(result, "cannot resolve", "label")


@pytest.mark.parametrize("transport", ["auto", "httpx"])
@pytest.mark.parametrize("target", BAD_TARGETS["http"])
async def test_http_probe_fails_a_bad_host_at_probe_time(target: str, transport: str) -> None:
    await load_ssl_context(True)
    probe = http_probe.HTTPProbe(
        http_probe.Options(transport=transport), list, interval=1.0, timeout=5.0
    )
    try:
        with trio.fail_after(GUARD):
            result = await probe.probe_once(target)
    finally:
        await probe._clients.aclose()
    _failed(result, "ConnectError", "label")


async def test_etcd_probing_skips_a_bad_target_and_probes_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    probe = etcd_probing.EtcdProbingProbe(
        etcd_probing.Options(),
        lambda: [BAD_TARGETS["etcd_probing"][0], "http://127.0.0.1:9/"],
        interval=0.5,
        timeout=0.2,
    )
    send, receive = trio.open_memory_channel[ProbeResult](100)
    async with trio.open_nursery() as nursery:
        await nursery.start(probe.run, send)
        with trio.fail_after(GUARD):
            result = await receive.receive()
        nursery.cancel_scope.cancel()
    assert result.target == "http://127.0.0.1:9/"
    assert "skipping target 'http://a..b:2379'" in caplog.text


# -- templates --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "item", ["{port:d}", "{target:{probe}}", "{target!r}", "x{labels[a]:>9}", "{host!z}"]
)
def test_external_command_format_specs_are_refused_by_check(item: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {"probe": [{"name": "p", "type": "external", "targets": ["h"], "command": ["x", item]}]}
        )
    assert "probe[0]" in str(info.value)
    assert "command" in str(info.value)
    assert "format specs and conversions are not supported" in str(info.value)


@pytest.mark.parametrize("item", ["{failures:d}", "{target:{probe}}", "{alert!r}"])
def test_alert_command_format_specs_are_refused_by_check(item: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "probe": [{"name": "p", "type": "http", "targets": ["http://127.0.0.1:9/"]}],
                "alert": [{"name": "a", "command": ["echo", item]}],
            }
        )
    assert "alert[0].command" in str(info.value) or "alert 'a'" in str(info.value)
    assert "format specs and conversions are not supported" in str(info.value)


def test_render_never_applies_a_spec_to_a_value() -> None:
    # Values that str.format would choke on under a spec are substituted as text.
    fields = {"failures": "3", "target": "{x:d}", "labels": {"a": "{0}"}}
    assert render_template("{failures}/{target}", fields) == "3/{x:d}"
    assert render_template("{{literal}} {labels[a]}", fields) == "{literal} {0}"
    with pytest.raises(KeyError):
        render_template("{labels[missing]}", fields)


# -- external output --------------------------------------------------------------------------

HUGE = "9" * 310


@pytest.mark.parametrize(
    "line", [f"queue {HUGE}", f"sent {HUGE}", f"codes map:code 200:{HUGE}", "x 1e400"]
)
def test_an_overflowing_value_is_refused_at_parse(line: str) -> None:
    out = parse_output(f"ok 1\n{line}\n", counters=frozenset({"sent"}))
    assert out.problem is not None
    assert len(out.problem) < 120  # one bounded line, never the digits
    assert out.bad_lines == 1
    assert out.gauges == {"ok": 1}
    assert out.counters == {}


async def test_a_program_printing_a_310_digit_number_fails_its_target(tmp_path: Path) -> None:
    script = tmp_path / "huge.py"
    script.write_text(f"print('queue {HUGE}')\nprint('sent {HUGE}')\n")
    probe = ExternalProbe(
        ExternalOptions(command=(sys.executable, str(script)), counters=("sent",)),
        list,
        interval=1.0,
        timeout=20.0,
    )
    with trio.fail_after(GUARD):
        result = await probe.probe_once("t")
    _failed(result, "output: value of queue out of range")
    assert result.error is not None
    assert HUGE[:20] not in result.error
    assert "queue" not in result.gauges
    # What the stats keeper does with it: no float() overflow.
    result.metrics()


# -- fuzz -------------------------------------------------------------------------------------

_LABEL = st.text(alphabet="ab-9é", min_size=0, max_size=70)
_HOSTS = st.lists(_LABEL, min_size=1, max_size=4).map(".".join)
_TARGETS = st.one_of(
    st.text(max_size=80),
    st.tuples(_HOSTS, st.integers(-1, 70000)).map(lambda hp: f"{hp[0]}:{hp[1]}"),
    _HOSTS.map(lambda h: f"http://{h}:80/x"),
)
_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _resolver_accepts(host: str) -> bool:
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


@_FUZZ
@given(_TARGETS)
def test_fuzz_a_target_check_accepts_is_one_the_resolver_can_encode(target: str) -> None:
    for type_name in ("tcp", "udp", "ping", "http", "etcd_probing"):
        check = probe_types.load(type_name).check_target
        try:
            check(target)
        except ValueError:
            continue
        if type_name in ("http", "etcd_probing"):
            host = http_probe.check_target(target).host
        elif type_name == "ping":
            host = target
        else:
            host, _ = split_host_port(target, 1)
        assert host_name_problem(host) is None
        if not host.startswith("[") and ":" not in host:
            assert _resolver_accepts(host), (type_name, target)


_FIELD = st.sampled_from(["target", "host", "port", "probe", "labels[a]", "labels", "x", ""])
_TEMPLATE = st.lists(
    st.one_of(
        st.text(alphabet="ab{}:!d0[]", max_size=6),
        st.tuples(_FIELD, st.sampled_from(["", ":d", "!r", ":{probe}", ":>4"])).map(
            lambda fs: "{" + fs[0] + fs[1] + "}"
        ),
    ),
    max_size=5,
).map("".join)


@_FUZZ
@given(_TEMPLATE, st.text(max_size=20))
def test_fuzz_a_template_check_accepts_renders_without_raising(template: str, value: str) -> None:
    names, mappings = {"target", "host", "port", "probe"}, {"labels"}
    try:
        check_template(template, names, mappings)
    except TemplateError:
        return
    values: dict[str, Any] = dict.fromkeys(names, value)
    values["labels"] = {"a": value}
    rendered = render_template(template, values)
    assert isinstance(rendered, str)
    # The same path the external probe takes: its Options accept it, argv renders it.
    probe = ExternalProbe(
        ExternalOptions(command=("x", template)), list, interval=1.0, timeout=1.0, labels={"a": "v"}
    )
    probe.argv(value)


_VALUE = st.one_of(
    st.integers(-(10**320), 10**320).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet="0123456789.eE+-naif", max_size=400),
)
_LINE = st.one_of(
    st.tuples(st.sampled_from(["g", "c", "total"]), _VALUE).map(" ".join),
    st.lists(_VALUE, max_size=3).map(lambda vs: "m map:k " + " ".join(f"k{v}:{v}" for v in vs)),
    st.text(max_size=40),
)


@_FUZZ
@given(st.lists(_LINE, max_size=8).map("\n".join))
def test_fuzz_external_output_never_raises_and_keeps_only_finite_values(text: str) -> None:
    out = parse_output(text, counters=frozenset({"c"}))
    values: list[Any] = list(out.gauges.values())
    for counter in out.counters.values():
        values.extend(getattr(counter, "values", {"": counter}).values())
    for value in values:
        assert float(value) == float(value)  # finite, and float() does not overflow
        assert abs(float(value)) < float("inf")
    if out.problem is not None:
        assert len(out.problem) < 120
    # What the keeper does with a result carrying them.
    ProbeResult("t", True, 0.0, extras={**out.counters}, gauges=out.gauges).metrics()
