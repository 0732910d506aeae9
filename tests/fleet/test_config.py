"""The [fleet] table and [[alert]] quorum in the config."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from trioprobe.config import ConfigError, parse_config

PROBE = {"name": "web", "type": "http", "targets": ["http://127.0.0.1:1/"]}


def _parse(**top: Any) -> Any:
    return parse_config({"probe": [PROBE], **top})


def test_without_fleet_nothing_changes() -> None:
    assert _parse().fleet is None


def test_defaults() -> None:
    fleet = _parse(fleet={"etcd": ["http://127.0.0.1:2379"], "name": "prod"}).fleet
    assert fleet.agent == socket.gethostname()
    assert (fleet.replicas, fleet.lease_ttl, fleet.zone, fleet.weight) == (1, 10.0, "", 1.0)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"etcd": [], "name": "p"}, "fleet.etcd: expected at least one etcd URL"),
        ({"etcd": ["127.0.0.1:2379"], "name": "p"}, "is not an http:// or https:// URL"),
        ({"etcd": ["http://e"], "name": ""}, "fleet.name: expected a non-empty name"),
        ({"etcd": ["http://e"], "name": "p", "agent": "a/b"}, "fleet.agent: expected"),
        ({"etcd": ["http://e"], "name": "p", "replicas": 0}, "fleet.replicas: expected >= 1"),
        ({"etcd": ["http://e"], "name": "p", "lease_ttl": 1}, "fleet.lease_ttl: expected 2"),
        ({"etcd": ["http://e"], "name": "p", "weight": -1}, "fleet.weight: expected 0"),
        ({"etcd": ["http://e"], "name": "p", "replica": 2}, "replica"),
    ],
)
def test_bad_fleet_tables(table: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("/", ".").replace(">", ".")):
        _parse(fleet=table)


def test_quorum_needs_as_many_replicas() -> None:
    alert = {"name": "down", "quorum": 2}
    with pytest.raises(ConfigError, match=r"alert\[0\]\.quorum: 2 votes need .* \(it is 1\)"):
        _parse(alert=[alert])
    config = _parse(alert=[alert], fleet={"etcd": ["http://e"], "name": "p", "replicas": 2})
    assert config.alerts[0].quorum == 2
    with pytest.raises(ConfigError, match=r"alert\[0\]\.quorum: expected >= 1"):
        _parse(alert=[{"name": "down", "quorum": 0}])
