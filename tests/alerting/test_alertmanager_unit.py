"""The Alertmanager notifier's documents and config checks (no server: see
tests/real/test_alertmanager.py for the real one)."""

from __future__ import annotations

import json

import attrs
import pytest

from trioprobe.alerting import DOWN, UP, Notice, Transition
from trioprobe.alerting.alertmanager import AlertmanagerNotifier, reason_of
from trioprobe.alerting.firing import FiringState
from trioprobe.config import ConfigError, parse_config


def _t(old: str, new: str, since: float, error: str | None) -> Transition:
    return Transition("p", "x", old, new, since, 3, 5, error, "a")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("ConnectError: all attempts to connect failed", "ConnectError"),
        ("httpx.ReadTimeout: ", "ReadTimeout"),
        ("latency 0.7 s above max_latency 0.5 s", "latency"),
        ("timeout", "timeout"),
        ("x is down (scripted)", "failed"),
        (None, "failed"),
    ],
)
def test_reason_label(error: str | None, reason: str) -> None:
    assert reason_of(error) == reason


def test_reason_label_is_the_classified_failure() -> None:
    notifier = AlertmanagerNotifier("http://127.0.0.1:9093/", "/nonexistent", alert="a")
    t = attrs.evolve(_t(UP, DOWN, 100.0, "ConnectError: refused"), failure="timeout (connect)")
    doc = notifier.alert_of(Notice("fire", t))
    assert doc["labels"]["reason"] == "timeout"  # bounded: the phase is not in the label
    assert "reason: timeout (connect)" in doc["annotations"]["description"]


def test_repeats_and_resolve_keep_the_fire_labels(tmp_path: object) -> None:
    # Alertmanager identifies an alert by its labels: if the resolve said reason=latency where
    # the fire said ConnectError, the firing alert would never resolve.
    notifier = AlertmanagerNotifier(
        "http://127.0.0.1:9093/",
        "/nonexistent",
        alert="a",
        probe_labels={"p": {"team": "web", "dst": "spoofed"}},
        generator_url=lambda p, t: f"http://s/status?probe={p}&target={t}",
    )
    state = FiringState("/nonexistent")
    fire = Notice("fire", _t(UP, DOWN, 100.0, "ConnectError: refused"))
    first = json.loads(notifier.record(fire, None))
    state.apply(fire)
    repeat = Notice("repeat", _t(DOWN, DOWN, 100.0, "latency 9 s above max_latency 1 s"), 1)
    again = json.loads(notifier.record(repeat, state.firing[("p", "x")]))
    state.apply(repeat)
    resolve = Notice("resolve", _t(DOWN, UP, 160.0, "latency 9 s above max_latency 1 s"))
    last = json.loads(notifier.record(resolve, state.firing[("p", "x")]))
    labels = first["alert"]["labels"]
    assert labels == {
        "alertname": "a",
        "probe": "p",
        "dst": "x",  # a probe label cannot override what identifies the target
        "severity": "critical",
        "reason": "ConnectError",
        "team": "web",
    }
    assert again["alert"]["labels"] == labels == last["alert"]["labels"]
    assert last["alert"]["startsAt"] == "1970-01-01T00:01:40Z"
    assert last["endsAt"] == "1970-01-01T00:02:40Z"
    assert "endsAt" not in first  # set when sent: now + 4 resend intervals
    assert first["alert"]["generatorURL"] == "http://s/status?probe=p&target=x"
    assert notifier.endpoint == "http://127.0.0.1:9093/api/v2/alerts"
    assert state.firing[("p", "x")].repeats == 1


def test_config_checks_the_alertmanager_url_and_queue() -> None:
    base = {"probe": [{"name": "p", "type": "tcp", "targets": ["127.0.0.1:1"]}]}
    with pytest.raises(ConfigError, match=r"alert\[0\]\.alertmanager: expected"):
        parse_config({**base, "alert": [{"name": "a", "alertmanager": "127.0.0.1:9093"}]})
    with pytest.raises(ConfigError, match=r"alertmanager_queue_dir: .* is also"):
        parse_config(
            {
                **base,
                "alert": [
                    {
                        "name": "a",
                        "webhook": "http://127.0.0.1:1/",
                        "webhook_queue_dir": "/tmp/q-shared",
                        "alertmanager": "http://127.0.0.1:9093",
                        "alertmanager_queue_dir": "/tmp/q-shared",
                    }
                ],
            }
        )
    config = parse_config({**base, "alert": [{"name": "a", "alertmanager": "http://h:9093"}]})
    assert config.alerts[0].severity == "critical"
