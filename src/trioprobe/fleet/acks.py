"""Acknowledgements of a fleet's firing alerts, kept in etcd so that any agent can take one.

An operator acknowledges a firing on whichever agent's status page they reach; the repeats come
from the target's notifier, which may be another agent, and may change (a takeover). So the
acknowledgement is stored under the fleet's prefix and mirrored by every agent, as votes are::

    acks/<probe>\\0<target>    JSON {"epoch", "by", "at"}, without a lease

* **No lease.** An acknowledgement belongs to the firing, not to the agent that took it: it
  must outlive that agent (redeployed, killed), or the pages would start again with nothing
  changed. A vote, by contrast, is an agent's view and dies with it.
* **Scoped to one firing.** It silences only the firing whose *epoch* it names (the revision
  that completed the quorum, the firing's identity on every agent), so a stale one, left by a
  resolve whose clean-up was lost, never silences a later firing of the same target.
* **Bounded.** One key per (probe, target), overwritten by the next acknowledgement: what can
  be left behind is at most one small key per target. The notifier deletes it (a conditional
  delete, so a newer acknowledgement is kept) when the firing resolves.

Writes: one put per acknowledgement and one delete per acknowledged firing's resolve.
"""

from __future__ import annotations

import json
import math

import attrs

__all__ = ["Ack", "ack_key", "ack_parts"]


@attrs.frozen
class Ack:
    """One acknowledgement, as stored (and, once mirrored, the revision it was written at)."""

    #: The epoch of the firing it silences.
    epoch: int
    #: The agent that took it (whose API was called).
    by: str
    #: When (wall clock, seconds since the epoch).
    at: float
    mod_revision: int = 0

    def encode(self) -> bytes:
        return json.dumps({"epoch": self.epoch, "by": self.by, "at": self.at}).encode()

    @classmethod
    def decode(cls, data: bytes, mod_revision: int) -> Ack | None:
        """The acknowledgement in ``data``; ``None`` for a value that is not one (ignored, as
        a member record that does not parse is)."""
        try:
            raw = json.loads(data)
            ack = cls(int(raw["epoch"]), str(raw["by"]), float(raw["at"]), mod_revision)
        except (ValueError, TypeError, KeyError):
            return None
        return ack if math.isfinite(ack.at) else None


def ack_key(prefix: bytes, probe: str, target: str) -> bytes:
    return prefix + f"{probe}\x00{target}".encode()


def ack_parts(prefix: bytes, key: bytes) -> tuple[str, str] | None:
    """(probe, target) of an ack key under ``prefix``; ``None`` for another key."""
    if not key.startswith(prefix):
        return None
    probe, sep, target = key[len(prefix) :].decode(errors="replace").partition("\x00")
    return (probe, target) if sep else None
