"""The alerts API beside the status page: list firing alerts, acknowledge one.

* ``GET /api/v1/alerts``: the firing alerts (``id``, ``alert``, ``probe``, ``target``,
  ``since``, ``acknowledged``) and the held ones (``held``: ``blocked`` or ``maintenance``).
* ``POST /api/v1/alerts/{id}/ack``: stop the repeats of a firing alert until it resolves.

On a fleet agent both are the fleet's (trioprobe.fleet.alerts): the listing shows the firings
the fleet agreed on, as this agent mirrors them, and an acknowledgement is stored in etcd, so
it stops the repeats whichever agent notifies; when etcd does not take it the answer is 503.

Writes need ``Authorization: Bearer <token>`` when ``[status] token_env`` or ``token_file``
gives a token; without one they are allowed only while the server is bound to a loopback
address (anyone who can reach a public port could otherwise silence a page). Reads stay open.
The token is compared in constant time and never written to any output.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
from typing import TYPE_CHECKING

from .._asgi import ASGIApp, Receive, Scope, Send, send_response

if TYPE_CHECKING:
    from ..specs import StatusSpec
    from .service import AlertingService

__all__ = ["AckError", "AlertsAPI", "is_loopback", "read_token"]

logger = logging.getLogger("trioprobe.alerting")

_PREFIX = "/api/v1/alerts"
_JSON = b"application/json"


class AckError(Exception):
    """An acknowledgement could not be stored (a fleet's etcd did not take it)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(spec: StatusSpec) -> str | None:
    """The configured write token (``None`` if none is configured).

    Raises ``ValueError`` naming the variable or file (never the token) if it is configured but
    missing or empty: serving writes open by mistake would be worse than not starting.
    """
    if spec.token_env:
        token = os.environ.get(spec.token_env, "").strip()
        if not token:
            raise ValueError(f"status.token_env: environment variable {spec.token_env} is not set")
        return token
    if spec.token_file:
        try:
            with open(spec.token_file, encoding="utf-8") as f:
                token = f.read(4096).strip()
        except OSError as exc:
            raise ValueError(
                f"status.token_file: cannot read {spec.token_file}: {exc.strerror}"
            ) from None
        if not token:
            raise ValueError(f"status.token_file: {spec.token_file} is empty")
        return token
    return None


class AlertsAPI:
    """Serves the alerts API and passes every other request to ``page``."""

    def __init__(
        self, service: AlertingService, page: ASGIApp, *, token: str | None, loopback: bool
    ) -> None:
        self.service = service
        self.page = page
        self._token = token
        self._loopback = loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(_PREFIX):
            await self.page(scope, receive, send)
            return
        rest = path[len(_PREFIX) :].strip("/")
        method = scope["method"]
        if rest == "" and method in ("GET", "HEAD"):
            await send_response(send, 200, self._listing(), _JSON)
        elif rest.endswith("/ack") and rest.count("/") == 1:
            if method != "POST":
                await send_response(send, 405, b"method not allowed: POST to acknowledge")
                return
            refused = self._refused(scope)
            if refused is not None:
                status, reason = refused
                await send_response(send, status, reason.encode())
                return
            key = rest.split("/", 1)[0]
            try:
                found = await self._acknowledge(key)
            except AckError as exc:
                await send_response(send, 503, f"not acknowledged: {exc}".encode())
                return
            if found:
                await send_response(send, 200, json.dumps({"acknowledged": key}).encode(), _JSON)
            else:
                await send_response(send, 404, b"no firing alert has this id")
        else:
            await send_response(send, 404, b"not found: GET /api/v1/alerts, POST .../{id}/ack")

    def _refused(self, scope: Scope) -> tuple[int, str] | None:
        if self._token is None:
            if self._loopback:
                return None
            return 403, (
                "writes need a token when the status page is not on loopback: set [status] "
                "token_env or token_file"
            )
        headers = dict(scope.get("headers", []))
        given = headers.get(b"authorization", b"")
        expected = b"Bearer " + self._token.encode()
        if hmac.compare_digest(given, expected):
            return None
        return 401, "missing or wrong bearer token"

    async def _acknowledge(self, key: str) -> bool:
        fleet = self.service.fleet
        if fleet is not None:
            return await fleet.acknowledge(key)
        return self.service.acknowledge(key)

    def _listing(self) -> bytes:
        service = self.service
        if service.fleet is not None:
            fleet_firing, fleet_held = service.fleet.listing()
            return json.dumps({"firing": fleet_firing, "held": fleet_held}).encode()
        firing = []
        for probe, target in service.firing_keys():
            key = service.fire_key(probe, target)
            entry = service.health.entry(probe, target)
            if key is None or entry is None:
                continue
            firing.append(
                {
                    "id": key,
                    "alert": entry.rule.name,
                    "probe": probe,
                    "target": target,
                    "since": entry.since,
                    "acknowledged": (probe, target) in service.acknowledged,
                }
            )
        held = [{"probe": p, "target": t, "held": why} for (p, t), why in service.held.items()]
        return json.dumps({"firing": firing, "held": held}).encode()
