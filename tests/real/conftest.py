"""Fixtures that start real services on loopback. See ``services.py`` for the skip policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .services import Etcd, InfluxDB, require_binary, running


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    """A running single-node etcd; ``etcd.stop()`` / ``etcd.start()`` simulate an outage."""
    service = Etcd(require_binary("etcd", "etcd-server"), tmp_path)
    with running(service):
        yield service


@pytest.fixture
def influxdb(tmp_path: Path) -> Iterator[InfluxDB]:
    """A running InfluxDB 1.x; ``influxdb.stop()`` / ``influxdb.start()`` simulate an outage."""
    service = InfluxDB(require_binary("influxd", "influxdb"), tmp_path)
    with running(service):
        yield service


@pytest.fixture
def prometheus_binary() -> str:
    """The path of Debian's ``prometheus``; the test builds its own scrape config."""
    return require_binary("prometheus", "prometheus")
