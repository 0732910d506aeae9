"""``Notice``: one notification (an alert fired, resolved or is still firing), and its document.

Kept apart from the notifiers so the durable ones (webhook, Alertmanager) and the alert state
they persist can share it without importing each other.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

import attrs

from .state import Transition

__all__ = ["Event", "Notice", "notice_from_document"]

Event = Literal["fire", "resolve", "repeat"]


@attrs.frozen
class Notice:
    """One notification: an alert fired, resolved, or is still firing (``repeat``)."""

    event: Event
    transition: Transition
    #: Counts the repeats of one firing (0 for fire and resolve).
    repeat: int = 0

    @property
    def key(self) -> str:
        """Unique per notice, stable across restarts: the idempotency key."""
        t = self.transition
        ident = json.dumps(
            [t.alert, t.probe, t.target, self.event, round(t.since * 1e6), self.repeat]
        )
        return hashlib.sha256(ident.encode()).hexdigest()[:32]

    def document(self) -> dict[str, object]:
        t = self.transition
        return {
            "key": self.key,
            "event": self.event,
            "alert": t.alert,
            "probe": t.probe,
            "target": t.target,
            "state": t.new,
            "previous": t.old,
            "since": t.since,
            "since_iso": datetime.fromtimestamp(t.since, UTC).isoformat(),
            "failures": t.failures,
            "total": t.total,
            "error": t.error,
            "failure": t.failure,
            "failure_reason": t.failure_reason,
            "reason": t.reason,
            "repeat": self.repeat,
        }

    def to_json(self) -> str:
        return json.dumps(self.document(), sort_keys=True)

    def fields(self) -> dict[str, str]:
        t = self.transition
        return {
            "alert": t.alert,
            "probe": t.probe,
            "target": t.target,
            "event": self.event,
            "state": t.new,
            "failures": str(t.failures),
            "total": str(t.total),
            "since": datetime.fromtimestamp(t.since, UTC).isoformat(),
            "error": t.error or "",
            "failure": t.failure or "",
            "key": self.key,
            "json": self.to_json(),
        }


def notice_from_document(doc: dict[str, Any]) -> Notice:
    """The notice whose :meth:`Notice.document` is ``doc`` (read back from disk after a restart).

    Raises ``KeyError``/``TypeError``/``ValueError`` for a document that is not one.
    """
    transition = Transition(
        probe=str(doc["probe"]),
        target=str(doc["target"]),
        old=doc["previous"],
        new=doc["state"],
        since=float(doc["since"]),
        failures=int(doc["failures"]),
        total=int(doc["total"]),
        error=None if doc["error"] is None else str(doc["error"]),
        alert=str(doc["alert"]),
        reason=doc["reason"],
        # Absent from notices queued before failure reasons existed.
        failure=None if doc.get("failure") is None else str(doc["failure"]),
    )
    if doc["event"] not in ("fire", "resolve", "repeat"):
        raise ValueError(f"unknown event {doc['event']!r}")
    return Notice(doc["event"], transition, repeat=int(doc["repeat"]))
