"""A prober fleet on etcd: targets sharded across agents by rendezvous hashing, taken over within
a lease when an agent dies, and alerts agreed between vantage points (docs/fleet.md).

Coordination is etcd's job: membership is a key per agent under a lease, and every agent
computes ownership from the same member list, so no agent ever negotiates with another.
"""

from __future__ import annotations

from .quorum import Verdict, notice_key, notifier, verdict
from .rendezvous import Member, key_of, owners, rank

__all__ = ["Member", "Verdict", "key_of", "notice_key", "notifier", "owners", "rank", "verdict"]
