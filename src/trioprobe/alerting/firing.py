"""``FiringState``: the alerts a durable notifier has queued as firing, kept beside its queue.

Without it a restart forgets what was fired: the new run starts every target at ``unknown``, a
target that came back meanwhile goes ``unknown -> up`` (not a resolve), and the receiver keeps a
firing alert for good. So every durable notifier (webhook, Alertmanager) records, after the
notices are on disk in its queue, which (probe, target) pairs it has fired and with which notice
(its idempotency key included); the next start reads it back and resolves what it finds.

The file is rewritten whole (write, fsync, rename, fsync the directory), so a crash leaves the
old or the new version, never a mix. It is written *after* the queue append: a crash in between
leaves a queued notice the state does not know about, which at worst means a second fire, never
a lost resolve.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from .notice import Notice, notice_from_document

__all__ = ["STATE_FILE", "FiringEntry", "FiringState"]

logger = logging.getLogger("trioprobe.alerting")

#: The state file's name inside the queue directory (the queue ignores names it does not own).
STATE_FILE = "alert-state.json"
_VERSION = 1

Key = tuple[str, str]


class FiringEntry:
    """One firing alert: the notice that fired it, and the repeats sent since."""

    __slots__ = ("notice", "repeats")

    def __init__(self, notice: Notice, repeats: int = 0) -> None:
        #: The fire notice (a repeat keeps it: what identifies the alert must not change).
        self.notice = notice
        self.repeats = repeats

    @property
    def starts_at(self) -> float:
        """Wall-clock time the alert began firing."""
        return self.notice.transition.since


class FiringState:
    """What one durable notifier has queued as firing, persisted in ``directory``.

    Only the notifier's task changes it (:meth:`apply`), then saves it off the event loop
    (:meth:`save_sync` in a worker thread).
    """

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, STATE_FILE)
        self.firing: dict[Key, FiringEntry] = {}

    def apply(self, notice: Notice) -> FiringEntry | None:
        """Fold in a notice that is now queued; the entry it ended, for a resolve."""
        t = notice.transition
        key = (t.probe, t.target)
        if notice.event == "resolve":
            return self.firing.pop(key, None)
        old = self.firing.get(key)
        if notice.event == "repeat" and old is not None:
            old.repeats = notice.repeat
        else:
            self.firing[key] = FiringEntry(notice, notice.repeat)
        return None

    def load_sync(self) -> None:
        """Read the file (worker thread). A missing file is an empty state; a damaged one is
        logged and set aside (renamed ``.bad``) so it is neither trusted nor lost."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return
        try:
            doc = json.loads(raw)
            if doc.get("version") != _VERSION:
                raise ValueError(f"unknown version {doc.get('version')!r}")
            for item in doc["firing"]:
                notice = notice_from_document(item["notice"])
                t = notice.transition
                self.firing[(t.probe, t.target)] = FiringEntry(notice, int(item["repeats"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.firing.clear()
            os.replace(self.path, self.path + ".bad")
            logger.warning(
                "alert state %s is damaged (%s): set aside as %s.bad; alerts fired before this "
                "start will not be resolved by it",
                self.path,
                exc,
                self.path,
            )

    def save_sync(self) -> None:
        """Replace the file atomically and durably (worker thread)."""
        doc: dict[str, Any] = {
            "version": _VERSION,
            "firing": [
                {"notice": e.notice.document(), "repeats": e.repeats} for e in self.firing.values()
            ],
        }
        tmp = self.path + ".tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(json.dumps(doc).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dfd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
