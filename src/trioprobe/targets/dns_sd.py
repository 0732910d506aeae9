"""``dns_sd``: targets from DNS names (SRV, A or AAAA), re-resolved at the records' TTL.

As Prometheus's dns_sd: an SRV record gives ``target:port`` per answer; A and AAAA records give
``address:port`` with the probe's ``dns_sd_port`` (``[v6]:port`` for AAAA). Resolution runs on
Trio with dnspython's async resolver. A name that fails (SERVFAIL, timeout, NXDOMAIN, no
answer) keeps what it resolved to last; the others go on.
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.resolver
import trio

from ._model import Target
from ._parse import CheckFn, target_problem
from ._source import Feed, Source

__all__ = ["DnsSDSource"]

#: The shortest wait between resolutions, whatever the TTL (a TTL of 0 must not spin).
MIN_REFRESH = 1.0


class DnsSDSource(Source):
    kind = "dns_sd"

    def __init__(
        self,
        names: Sequence[str],
        check: CheckFn | None = None,
        *,
        rdtype: str = "SRV",
        port: int | None = None,
        server: str | None = None,
        template: str = "{address}",
        refresh_interval: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        if rdtype in ("A", "AAAA") and port is None:
            raise ValueError(f"dns_sd with {rdtype} records needs dns_sd_port")
        self.names = tuple(names)
        self.check = check
        self.rdtype = rdtype
        self.port = port
        self.server = server
        self.template = template
        self.refresh_interval = refresh_interval
        self.timeout = timeout
        self._by_name: dict[str, tuple[Target, ...]] = {}

    def describe(self) -> str:
        return f"{self.rdtype} {', '.join(self.names)}"

    def _resolver(self) -> dns.asyncresolver.Resolver:
        if self.server is None:
            return dns.asyncresolver.Resolver()
        resolver = dns.asyncresolver.Resolver(configure=False)
        host, port = split_server(self.server)
        resolver.nameservers = [host]
        resolver.port = port
        return resolver

    async def watch(
        self, feed: Feed, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        resolver = self._resolver()
        while True:
            ttl = await self._resolve_all(resolver, feed)
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED
            await trio.sleep(max(MIN_REFRESH, min(ttl, self.refresh_interval)))

    async def _resolve_all(self, resolver: dns.asyncresolver.Resolver, feed: Feed) -> float:
        ttl = self.refresh_interval
        failures = []
        for name in self.names:
            try:
                answer = await resolver.resolve(name, self.rdtype, lifetime=self.timeout)
            except (dns.exception.DNSException, OSError) as exc:
                failures.append(f"{self.rdtype} {name}: {type(exc).__name__}: {exc}")
                continue
            if answer.rrset is not None:
                ttl = min(ttl, float(answer.rrset.ttl))
            self._by_name[name] = tuple(self._targets(name, answer))
        if failures:
            feed.fail("; ".join(failures))
            ttl = MIN_REFRESH if not self._by_name else ttl
        if self._by_name or not failures:
            self._publish(feed)
        return ttl

    def _publish(self, feed: Feed) -> None:
        targets: dict[str, Target] = {}
        bad: dict[str, str] = {}
        for name in self.names:
            for target in self._by_name.get(name, ()):
                problem = target_problem(target.address, self.check)
                if problem is not None:
                    bad[target.address] = f"dns_sd {name}: bad target {target.address!r}: {problem}"
                else:
                    targets.setdefault(target.address, target)
        feed.publish(tuple(targets.values()), bad)

    def _targets(self, name: str, answer: dns.resolver.Answer) -> list[Target]:
        found = []
        for rdata in answer:
            labels = {"__meta_dns_name": name}
            if self.rdtype == "SRV":
                host = str(rdata.target).rstrip(".")
                port = int(rdata.port)
                labels["__meta_dns_srv_record_target"] = host
                labels["__meta_dns_srv_record_port"] = str(port)
            else:
                host = str(rdata.address)
                host = f"[{host}]" if self.rdtype == "AAAA" else host
                port = int(self.port or 0)
            address = f"{host}:{port}"
            labels["__address__"] = address
            found.append(Target(self.template.replace("{address}", address), labels))
        return found


def split_server(server: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` -> (host, port); port 53 if not given."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        port = rest.removeprefix(":")
    elif server.count(":") == 1:
        host, port = server.split(":")
    else:
        host, port = server, ""
    return host, int(port) if port else 53
