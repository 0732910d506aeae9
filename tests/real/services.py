"""Real external services (etcd, InfluxDB, Prometheus) started on loopback by the tests.

Each service runs as a child process with a temporary data directory and free ports. Tests that
need one skip with a clear reason when its binary is missing, except when
``TRIOPROBE_REQUIRE_REAL=1`` is set (``.ci/run`` sets it): then a missing service is a failure.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest

REQUIRE_REAL = os.environ.get("TRIOPROBE_REQUIRE_REAL") == "1"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with ``reason`` locally; fail under TRIOPROBE_REQUIRE_REAL=1, where a test that
    cannot run is a gap in what the run proves, not a detail of this machine."""
    if REQUIRE_REAL:
        pytest.fail(f"TRIOPROBE_REQUIRE_REAL=1 but {reason}")
    pytest.skip(reason)


def require_module(name: str, why: str) -> Any:
    """``importlib.import_module(name)``, or :func:`skip_or_fail` when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        skip_or_fail(f"{why}: cannot import {name} ({exc}); pip install -e '.[dev]'")


def require_binary(name: str, package: str) -> str:
    """Return the path of ``name``, or skip (fail under TRIOPROBE_REQUIRE_REAL=1) if absent."""
    path = shutil.which(name) or (
        f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None
    )
    if path is None:
        reason = (
            f"{name} not found: install Debian's {package!r} package "
            f"(scripts/test does this when run as root)"
        )
        skip_or_fail(reason)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http_ok(
    url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``url`` until it answers 2xx; raise with the reason if it never does."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"service exited with code {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if 200 <= resp.status < 300:
                    return
                last = resp.status
        except urllib.error.HTTPError as exc:
            # Not ready yet (e.g. Prometheus answers 503 while starting). The error holds the
            # response's socket: close it, or it leaks a ResourceWarning.
            last = exc.code
            exc.close()
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s (last: {last!r})")


class Service:
    """A restartable child process: ``start()``, ``stop()``, ``restart()``."""

    def __init__(self, argv: list[str], ready_url: str, log_path: Path) -> None:
        self.argv = argv
        self.ready_url = ready_url
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None, "already running"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child for its lifetime
        try:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        try:
            wait_http_ok(self.ready_url, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(
                f"{self.argv[0]} failed to start; its log:\n{self.log_path.read_text()[-3000:]}"
            ) from None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class Etcd(Service):
    """A single-node etcd. ``client_url`` serves the v3 JSON gateway; ``peer_url`` serves
    ``/raft/probing`` in etcd's health format."""

    def __init__(self, binary: str, data_dir: Path) -> None:
        client_port, peer_port = free_port(), free_port()
        self.client_url = f"http://127.0.0.1:{client_port}"
        self.peer_url = f"http://127.0.0.1:{peer_port}"
        argv = [
            binary,
            "--name=n1",
            f"--data-dir={data_dir / 'data'}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster=n1={self.peer_url}",
            "--initial-cluster-state=new",
            "--log-level=warn",
            "--logger=zap",
        ]
        super().__init__(argv, f"{self.client_url}/health", data_dir / "etcd.log")


class InfluxDB(Service):
    """A single InfluxDB 1.x server; ``url`` is its HTTP API."""

    def __init__(self, binary: str, data_dir: Path) -> None:
        http_port, rpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{http_port}"
        config = data_dir / "influxdb.conf"
        config.write_text(
            f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc_port}"\n'
            f'[meta]\n  dir = "{data_dir}/meta"\n'
            f'[data]\n  dir = "{data_dir}/data"\n  wal-dir = "{data_dir}/wal"\n'
            f"  query-log-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{http_port}"\n  log-enabled = false\n'
            f"[monitor]\n  store-enabled = false\n"
            f"[continuous_queries]\n  enabled = false\n"
        )
        super().__init__(
            [binary, "-config", str(config)], f"{self.url}/ping", data_dir / "influxd.log"
        )


class Prometheus(Service):
    """A Prometheus server scraping ``targets`` (host:port) every ``scrape_interval``."""

    def __init__(
        self, binary: str, data_dir: Path, targets: list[str], scrape_interval: str = "1s"
    ) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = data_dir / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {scrape_interval}\n"
            "scrape_configs:\n"
            "  - job_name: trioprobe\n"
            f"    static_configs:\n      - targets: {targets!r}\n"
        )
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        super().__init__(argv, f"{self.url}/-/ready", data_dir / "prometheus.log")


@contextmanager
def running(service: Service) -> Iterator[Service]:
    service.start()
    try:
        yield service
    finally:
        service.stop()


class Alertmanager(Service):
    """Prometheus Alertmanager routing every alert to ``receiver_url`` (a webhook receiver),
    grouped by alert and target, with short waits so a test sees notifications within a second.
    Clustering is off (it would listen on every interface). ``url`` is its API; silences and the
    notification log persist in ``data_dir`` across ``restart()``."""

    def __init__(self, binary: str, data_dir: Path, receiver_url: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = data_dir / "alertmanager.yml"
        config.write_text(
            "route:\n"
            "  receiver: hook\n"
            "  group_by: ['alertname', 'dst']\n"
            "  group_wait: 200ms\n"
            "  group_interval: 500ms\n"
            "  repeat_interval: 1h\n"
            "receivers:\n"
            "  - name: hook\n"
            "    webhook_configs:\n"
            f"      - url: {receiver_url}\n"
            "        send_resolved: true\n"
        )
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.path={data_dir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        super().__init__(argv, f"{self.url}/-/ready", data_dir / "alertmanager.log")
