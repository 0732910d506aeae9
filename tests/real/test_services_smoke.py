"""The fixtures themselves: each real service starts, answers, stops and starts again."""

import urllib.request

import pytest

from .services import Etcd, InfluxDB

pytestmark = pytest.mark.real


def test_etcd_peer_serves_probing_format(etcd: Etcd) -> None:
    with urllib.request.urlopen(f"{etcd.peer_url}/raft/probing", timeout=5) as resp:
        body = resp.read()
    assert b'"OK":true' in body.replace(b" ", b"")


def test_influxdb_restarts(influxdb: InfluxDB) -> None:
    influxdb.restart()
    with urllib.request.urlopen(f"{influxdb.url}/ping", timeout=5) as resp:
        assert resp.status == 204
