"""Target sources against the real systems users run: Prometheus reading the same file_sd file,
dnsmasq serving A and SRV records that change, etcd with keys added and removed."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from trioprobe.targets import DnsSDSource, EtcdSDSource, FileSDSource, ProbeTargets

from ..targets._util import wait_for
from .net_services import _child, _dns_answers, free_udp_tcp_port
from .services import Etcd, Service, require_binary

pytestmark = pytest.mark.real

FILE_SD = [
    {"targets": ["127.0.0.1:9", "127.0.0.2:9"], "labels": {"job_owner": "db", "zone": "eu"}},
    {"targets": ["127.0.0.3:9"], "labels": {"zone": "us", "__meta_hidden": "x"}},
    {"targets": ["127.0.0.1:9"], "labels": {"zone": "dup"}},  # listed twice: first group wins
]


class _PrometheusFileSD(Service):
    def __init__(self, binary: str, data_dir: Path, sd_file: Path) -> None:
        from .services import free_port

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = data_dir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1h\nscrape_configs:\n"
            "  - job_name: sd\n    file_sd_configs:\n"
            f"      - files: [{str(sd_file)!r}]\n        refresh_interval: 1s\n"
        )
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        super().__init__(argv, f"{self.url}/-/ready", data_dir / "prometheus.log")


def _prometheus_targets(url: str) -> dict[str, dict[str, str]]:
    with urllib.request.urlopen(f"{url}/api/v1/targets?state=active", timeout=5) as resp:
        body = json.load(resp)
    found = {}
    for target in body["data"]["activeTargets"]:
        labels = {k: v for k, v in target["labels"].items() if k not in ("job", "instance")}
        found[target["discoveredLabels"]["__address__"]] = labels
    return found


async def test_file_sd_agrees_with_a_real_prometheus(tmp_path: Path) -> None:
    binary = require_binary("prometheus", "prometheus")
    sd = tmp_path / "targets.json"
    sd.write_text(json.dumps(FILE_SD))
    targets = ProbeTargets("p", [FileSDSource(sd)])
    targets.preload()
    ours = {address: targets.labels_of(address) for address in targets()}
    prometheus = _PrometheusFileSD(binary, tmp_path, sd)
    await trio.to_thread.run_sync(prometheus.start)
    try:
        theirs: dict[str, dict[str, str]] = {}
        with trio.fail_after(60):
            while theirs != ours:  # Prometheus reads the file on its own schedule
                await trio.sleep(0.2)
                theirs = await trio.to_thread.run_sync(_prometheus_targets, prometheus.url)
    finally:
        await trio.to_thread.run_sync(prometheus.stop)
    assert theirs == {
        "127.0.0.1:9": {"job_owner": "db", "zone": "eu"},
        "127.0.0.2:9": {"job_owner": "db", "zone": "eu"},
        "127.0.0.3:9": {"zone": "us"},
    }


@contextmanager
def _dnsmasq(tmp_path: Path, port: int, srv: list[str], hosts_dir: Path) -> Iterator[None]:
    binary = require_binary("dnsmasq", "dnsmasq-base")
    argv = [
        binary,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--pid-file=",
        "--log-facility=-",
        "--user=root",
        "--local-ttl=1",
        f"--hostsdir={hosts_dir}",  # re-read by dnsmasq when a file there changes
        "--local=/x.test/",
        "--address=/www.x.test/127.0.0.9",  # what the readiness check asks
        *(f"--srv-host={record}" for record in srv),
    ]
    with _child(argv, tmp_path / "dnsmasq.log", lambda: _dns_answers(port)):
        yield


async def test_dns_sd_follows_changing_a_and_srv_records(tmp_path: Path) -> None:
    hosts_dir = tmp_path / "hosts"
    hosts_dir.mkdir()
    (hosts_dir / "web").write_text("127.0.0.11 web.x.test\n")
    port = free_udp_tcp_port()
    server = f"127.0.0.1:{port}"
    a = DnsSDSource(["web.x.test"], rdtype="A", port=8080, server=server)
    srv = DnsSDSource(["_http._tcp.x.test"], server=server)
    a_targets, srv_targets = ProbeTargets("a", [a]), ProbeTargets("srv", [srv])
    first_srv = ["_http._tcp.x.test,one.x.test,8001", "_http._tcp.x.test,two.x.test,8002"]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            with _dnsmasq(tmp_path, port, first_srv, hosts_dir):
                await nursery.start(a_targets.run)
                await nursery.start(srv_targets.run)
                assert a_targets() == ("127.0.0.11:8080",)
                assert sorted(srv_targets()) == ["one.x.test:8001", "two.x.test:8002"]
                # A: the hosts file changes, dnsmasq re-reads it, the TTL (1 s) brings it here.
                (hosts_dir / "web").write_text("127.0.0.11 web.x.test\n127.0.0.12 web.x.test\n")
                await wait_for(lambda: len(a_targets()) == 2, 0.1)
                assert sorted(a_targets()) == ["127.0.0.11:8080", "127.0.0.12:8080"]
            # dnsmasq is down: both keep their targets and count the failures.
            await wait_for(lambda: srv_targets.states[0].errors_total >= 1, 0.1)
            assert sorted(srv_targets()) == ["one.x.test:8001", "two.x.test:8002"]
            assert len(a_targets()) == 2
            # Back with other SRV records on the same port.
            with _dnsmasq(tmp_path, port, ["_http._tcp.x.test,three.x.test,8003"], hosts_dir):
                await wait_for(lambda: srv_targets() == ("three.x.test:8003",), 0.1)
            nursery.cancel_scope.cancel()


def _etcd_put(etcd: Etcd, key: str, value: str = "", delete: bool = False) -> None:
    import base64

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    path, body = (
        ("kv/deleterange", {"key": b64(key)})
        if delete
        else (
            "kv/put",
            {"key": b64(key), "value": b64(value)},
        )
    )
    request = urllib.request.Request(
        f"{etcd.client_url}/v3/{path}", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        resp.read()


async def test_etcd_sd_follows_keys_added_and_removed(etcd: Etcd) -> None:
    prefix = "/trioprobe/targets/web/"
    await trio.to_thread.run_sync(_etcd_put, etcd, prefix + "http://a.example/", "")
    await trio.to_thread.run_sync(_etcd_put, etcd, "/trioprobe/other/x", "")  # not ours
    # A reply over 64 KiB: parsed in a worker thread, with the same result.
    big = json.dumps({"note": "x" * 70_000})
    await trio.to_thread.run_sync(_etcd_put, etcd, prefix + "http://big.example/", big)
    source = EtcdSDSource([etcd.client_url], prefix, backoff=0.2)
    targets = ProbeTargets("web", [source])
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(targets.run)
            assert targets() == ("http://a.example/", "http://big.example/")
            assert len(targets.labels_of("http://big.example/")["note"]) == 70_000
            await trio.to_thread.run_sync(_etcd_put, etcd, prefix + "http://big.example/", "", True)
            await wait_for(lambda: targets() == ("http://a.example/",))
            await trio.to_thread.run_sync(
                _etcd_put, etcd, prefix + "http://b.example/", json.dumps({"zone": "eu"})
            )
            await wait_for(lambda: len(targets()) == 2)
            assert targets.labels_of("http://b.example/") == {"zone": "eu"}
            await trio.to_thread.run_sync(_etcd_put, etcd, prefix + "bad", "[1, 2]")
            await trio.to_thread.run_sync(_etcd_put, etcd, prefix + "http://a.example/", "", True)
            await wait_for(lambda: targets() == ("http://b.example/",))
            assert "expected a JSON object of labels" in targets.bad_targets()[prefix + "bad"]
            # etcd down: the targets stay, the failures are counted; back: watched again.
            await trio.to_thread.run_sync(etcd.stop)
            await wait_for(lambda: targets.states[0].errors_total >= 1, 0.1)
            assert targets() == ("http://b.example/",)
            await trio.to_thread.run_sync(etcd.start)
            await trio.to_thread.run_sync(_etcd_put, etcd, prefix + "http://c.example/", "")
            await wait_for(lambda: len(targets()) == 2, 0.1)
            assert source.watches >= 2
            nursery.cancel_scope.cancel()
