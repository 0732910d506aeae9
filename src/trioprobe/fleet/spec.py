"""The ``[fleet]`` config table (a leaf module: the config loader imports it, nothing else)."""

from __future__ import annotations

import math
import socket

import attrs

__all__ = ["FleetSpec"]


@attrs.frozen
class FleetSpec:
    """``[fleet]``: join a fleet of agents that shard the targets between them (docs/fleet.md)."""

    #: etcd client URLs (``http://host:2379``); the agent tries them in turn.
    etcd: tuple[str, ...]
    #: The fleet's name: agents with the same name (and etcd) share the targets.
    name: str
    #: This agent's name, unique among the fleet's live agents; default the host name.
    agent: str = attrs.field(factory=socket.gethostname)
    #: How many agents probe each target.
    replicas: int = 1
    #: Seconds without a keep-alive after which etcd drops a dead agent (and others take over).
    lease_ttl: float = 10.0
    #: Replicas of a target are spread over distinct zones while there are enough.
    zone: str = ""
    #: This agent's share of the targets relative to the others (0 probes nothing).
    weight: float = 1.0

    def problems(self) -> list[str]:
        """What is wrong with the values, one line each, naming the key."""
        out: list[str] = []
        if not self.etcd:
            out.append("fleet.etcd: expected at least one etcd URL")
        for url in self.etcd:
            if not url.startswith(("http://", "https://")):
                out.append(f"fleet.etcd: {url!r} is not an http:// or https:// URL")
        for key, value in (("name", self.name), ("agent", self.agent)):
            if not value or "\x00" in value or "/" in value:
                out.append(f"fleet.{key}: expected a non-empty name without '/', got {value!r}")
        if self.replicas < 1:
            out.append(f"fleet.replicas: expected >= 1, got {self.replicas}")
        if not (math.isfinite(self.lease_ttl) and 2 <= self.lease_ttl <= 3600):
            out.append(f"fleet.lease_ttl: expected 2 to 3600 seconds, got {self.lease_ttl}")
        if not (math.isfinite(self.weight) and 0 <= self.weight <= 1e6):
            out.append(f"fleet.weight: expected 0 to 1e6, got {self.weight}")
        return out
