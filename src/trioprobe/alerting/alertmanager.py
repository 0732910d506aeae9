"""``AlertmanagerNotifier``: hand firing alerts to Prometheus Alertmanager, durably.

Alertmanager then owns routing, grouping, inhibition and silences. The protocol is the one
Prometheus speaks (``POST /api/v2/alerts``, a JSON array of alerts):

* an alert is identified by its label set: ``alertname`` (the ``[[alert]]`` name), ``probe``,
  ``dst`` (the target), ``severity``, ``reason`` (why it fired) and the probe's labels. The labels
  are fixed when the alert fires, and its repeats and resolve reuse them, or Alertmanager would
  see a new alert;
* while firing, the alert is re-sent every :data:`RESEND_INTERVAL` seconds with ``endsAt`` set
  :data:`ENDS_AFTER` resends ahead, as Prometheus does: an Alertmanager that restarted (it keeps
  no alerts on disk) has it back within a minute, and one that stops hearing from trioprobe
  resolves it by itself rather than keeping a stale alert for good;
* a resolve is sent with ``endsAt`` = when the target recovered.

Fire and resolve notices go through the handoff queue like the webhook's (an outage or a restart
loses nothing; see :mod:`trioprobe.alerting.queued`); the resends do not (they are re-derived
from the alert state, which survives restarts).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import trio

from ..handoff import RecordRejected
from .firing import FiringEntry
from .notice import Notice
from .queued import DeliveryError, QueuedNotifier, check_reply

__all__ = [
    "ENDS_AFTER",
    "RESEND_INTERVAL",
    "AlertmanagerError",
    "AlertmanagerNotifier",
    "reason_of",
]

logger = logging.getLogger("trioprobe.alerting")

#: Seconds between re-sends of the firing alerts (Prometheus's ``--rules.alert.resend-delay``).
RESEND_INTERVAL = 60.0
#: A firing alert's ``endsAt`` is this many resend intervals ahead (Prometheus uses 4).
ENDS_AFTER = 4
#: Upper bound of the retry delay while Alertmanager is down (seconds).
RETRY_MAX_INTERVAL = 30.0
_REASON = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)\s*:")


class AlertmanagerError(DeliveryError):
    """Alertmanager failed a request (it is retried)."""


def reason_of(error: str | None) -> str:
    """A short, stable word for why a target is down (the ``reason`` label).

    The error's exception class (``ConnectError: ...`` -> ``ConnectError``), ``latency`` for a
    success slower than ``max_latency``, ``timeout``, else ``failed``.
    """
    if not error:
        return "failed"
    if error.startswith("latency "):
        return "latency"
    if error == "timeout":
        return "timeout"
    match = _REASON.match(error)
    return match.group(1).rsplit(".", 1)[-1] if match else "failed"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class AlertmanagerNotifier(QueuedNotifier):
    """Sends each alert's fire and resolve to Alertmanager ``url``, and re-sends firing ones."""

    error = AlertmanagerError

    def __init__(
        self,
        url: str,
        queue_dir: str,
        *,
        alert: str,
        severity: str = "critical",
        probe_labels: Mapping[str, Mapping[str, str]] | None = None,
        generator_url: Callable[[str, str], str] | None = None,
        timeout: float = 10.0,
        drain_timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            f"alertmanager {url}",
            queue_dir,
            default_dir=f"alert-{alert}-alertmanager",
            timeout=timeout,
            drain_timeout=drain_timeout,
            transport=transport,
        )
        self.url = url.rstrip("/")
        self.endpoint = f"{self.url}/api/v2/alerts"
        self.severity = severity
        self.probe_labels = {k: dict(v) for k, v in (probe_labels or {}).items()}
        self.generator_url = generator_url
        #: Re-sends that failed (each is tried again at the next interval).
        self.resend_failures = 0

    def retry_max_interval(self) -> float:
        return RETRY_MAX_INTERVAL

    def alert_of(self, fire: Notice) -> dict[str, Any]:
        """The Alertmanager alert (without ``endsAt``) of the alert ``fire`` began."""
        t = fire.transition
        labels = {
            **self.probe_labels.get(t.probe, {}),
            "alertname": t.alert,
            "probe": t.probe,
            "dst": t.target,
            "severity": self.severity,
            # The classified reason (trioprobe.failures); the error's words for a transition
            # queued before reasons existed.
            "reason": t.failure_reason or reason_of(t.error),
        }
        doc: dict[str, Any] = {
            "labels": labels,
            "annotations": {
                "summary": f"{t.target} is down ({t.probe})",
                "description": (
                    f"probe {t.probe!r} target {t.target!r} is down: {t.failures} of the last "
                    f"{t.total} probes failed"
                    + (f"; reason: {t.failure}" if t.failure else "")
                    + (f"; last error: {t.error}" if t.error else "")
                ),
            },
            "startsAt": _iso(t.since),
        }
        generator = self.generator_url(t.probe, t.target) if self.generator_url else ""
        if generator:
            doc["generatorURL"] = generator
        return doc

    def record(self, notice: Notice, firing: FiringEntry | None) -> bytes:
        fire = firing.notice if firing is not None and notice.event != "fire" else notice
        doc: dict[str, Any] = {"key": notice.key, "alert": self.alert_of(fire)}
        if notice.event == "resolve":
            doc["endsAt"] = _iso(notice.transition.since)
        return json.dumps(doc).encode()

    def _firing_until(self) -> str:
        return _iso(time.time() + ENDS_AFTER * RESEND_INTERVAL)

    async def send(self, client: httpx.AsyncClient, data: bytes) -> None:
        doc = json.loads(data)
        alert = doc["alert"]
        alert["endsAt"] = doc.get("endsAt") or self._firing_until()
        reply = await self.post(
            client,
            self.endpoint,
            json.dumps([alert]).encode(),
            {"content-type": "application/json"},
        )
        check_reply(self.endpoint, reply, f"alert {doc['key']}", AlertmanagerError)

    async def background(self, client: httpx.AsyncClient) -> None:
        """Re-send the firing alerts every :data:`RESEND_INTERVAL` seconds."""
        while True:
            await trio.sleep(RESEND_INTERVAL)
            await self.resend(client)

    async def resend(self, client: httpx.AsyncClient) -> None:
        entries = list(self.state.firing.values())
        if not entries:
            return
        until = self._firing_until()
        alerts = [{**self.alert_of(e.notice), "endsAt": until} for e in entries]
        try:
            reply = await self.post(
                client,
                self.endpoint,
                json.dumps(alerts).encode(),
                {"content-type": "application/json"},
            )
            check_reply(self.endpoint, reply, f"{len(alerts)} firing alert(s)", self.error)
        except (DeliveryError, RecordRejected) as exc:  # tried again at the next interval
            self.resend_failures += 1
            logger.info("%s: re-sending %d firing alert(s) failed: %s", self.name, len(alerts), exc)
