"""Notifications: what is sent when an alert fires, resolves or repeats, and how.

* :class:`CommandNotifier` runs a program with ``trio.run_process`` (never a shell), its arguments
  templated from the notice, under a timeout; notices are run one after another.
* :class:`WebhookNotifier` POSTs the notice as JSON. Each notice is first appended durably to a
  handoff queue and a :class:`~trioprobe.handoff.WriteReplayer` delivers it, retrying while the
  receiver is down; so an outage, or a restart of trioprobe in between, loses nothing. Delivery is
  at least once: the ``key`` (also sent as the ``Idempotency-Key`` header) lets the receiver drop
  a duplicate.
* :func:`log_notice` logs it.

Each notifier runs in its own task behind a bounded channel, so a slow or failing one delays
nobody else, and never the probes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from datetime import UTC, datetime
from functools import partial
from typing import Literal

import attrs
import httpx
import trio

from .._templates import check_template as _check_template
from .._templates import render_template
from ..handoff import HandoffError, RecordRejected, WriteReplayer, open_queue
from ..handoff.disk_queue import default_queue_dir, prepare_default_root
from .state import Transition

__all__ = [
    "COMMAND_FIELDS",
    "CommandNotifier",
    "Notice",
    "WebhookError",
    "WebhookNotifier",
    "check_template",
    "log_notice",
]

logger = logging.getLogger("trioprobe.alerting")

Event = Literal["fire", "resolve", "repeat"]

#: The ``{name}`` fields a command argument may use.
COMMAND_FIELDS = frozenset(
    {
        "alert",
        "probe",
        "target",
        "event",
        "state",
        "failures",
        "total",
        "since",
        "error",
        "key",
        "json",
    }
)
#: Upper bound of the retry delay while a webhook receiver is down (seconds).
WEBHOOK_RETRY_MAX_INTERVAL = 30.0
#: Notices waiting for a notifier before new ones are dropped (and counted).
NOTICE_BUFFER = 1024
#: stderr kept from a failed command for its log line.
_STDERR_TAIL = 500


def check_template(arg: str) -> None:
    """Raise ``ValueError`` naming the problem if ``arg`` is not a valid command template."""
    _check_template(arg, COMMAND_FIELDS)


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
            "key": self.key,
            "json": self.to_json(),
        }


def log_notice(notice: Notice) -> None:
    t = notice.transition
    # One level for fire, repeat and resolve: a log filtered at WARNING must not show an alert
    # firing and never resolving.
    logger.log(
        logging.WARNING,
        "alert %r %s: probe %r target %r is %s (%d of last %d failed)%s",
        t.alert,
        notice.event,
        t.probe,
        t.target,
        t.new,
        t.failures,
        t.total,
        f": {t.error}" if t.error and notice.event != "resolve" else "",
    )


class CommandNotifier:
    """Runs ``argv`` (templated per notice) for each notice, one at a time, under ``timeout``."""

    def __init__(self, argv: tuple[str, ...], timeout: float) -> None:
        for arg in argv:
            check_template(arg)
        self.argv = argv
        self.timeout = timeout
        self.name = f"command {argv[0]!r}"
        self.succeeded = 0
        self.failed = 0

    async def run(
        self,
        notices: trio.MemoryReceiveChannel[Notice],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with notices:
            task_status.started()
            async for notice in notices:
                await self.notify(notice)

    async def notify(self, notice: Notice) -> bool:
        """Run the command for ``notice``; whether it exited 0 in time (failures are logged)."""
        fields = notice.fields()
        argv = [render_template(arg, fields) for arg in self.argv]
        why: str | None = None
        with trio.move_on_after(self.timeout) as scope:
            try:
                done = await trio.run_process(
                    argv, check=False, stdin=b"", stdout=subprocess.DEVNULL, capture_stderr=True
                )
            except OSError as exc:
                why = f"could not start: {exc}"
            else:
                if done.returncode != 0:
                    tail = done.stderr.decode(errors="replace")[-_STDERR_TAIL:].strip()
                    why = f"exited with {done.returncode}" + (f": {tail}" if tail else "")
        if scope.cancelled_caught:
            why = f"killed after its timeout of {self.timeout:g} s"
        if why is None:
            self.succeeded += 1
            return True
        self.failed += 1
        logger.warning(
            "alert %r: %s %s for %s", notice.transition.alert, self.name, why, notice.event
        )
        return False


class WebhookError(Exception):
    """The webhook receiver failed a request (it is retried)."""


def default_webhook_dir(alert: str) -> str:
    return default_queue_dir(f"alert-{alert}")


class WebhookNotifier:
    """POSTs each notice as JSON to ``url``, durably, through a handoff queue (see module doc)."""

    def __init__(
        self,
        url: str,
        queue_dir: str,
        *,
        alert: str = "",
        timeout: float = 10.0,
        drain_timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.queue_dir = queue_dir or default_webhook_dir(alert or url)
        self._default_dir = not queue_dir
        self.timeout = timeout
        self.drain_timeout = drain_timeout
        self.name = f"webhook {url}"
        self._transport = transport
        self.replayer: WriteReplayer | None = None
        #: Notices the queue refused (full, or a disk error).
        self.dropped = 0

    async def run(
        self,
        notices: trio.MemoryReceiveChannel[Notice],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Queue notices until ``notices`` ends; then deliver what is left, for up to
        ``drain_timeout`` seconds (the rest stays on disk, delivered on the next start)."""
        directory = self.queue_dir
        if self._default_dir:
            await trio.to_thread.run_sync(prepare_default_root)
        async with (
            notices,
            open_queue(directory) as queue,
            httpx.AsyncClient(transport=self._transport) as client,
        ):
            replayer = WriteReplayer(
                queue,
                partial(self._send, client),
                transient_errors=(WebhookError, httpx.HTTPError),
                retry_interval=min(0.1, WEBHOOK_RETRY_MAX_INTERVAL),
                retry_max_interval=WEBHOOK_RETRY_MAX_INTERVAL,
            )
            self.replayer = replayer
            async with trio.open_nursery() as nursery:
                # Queued notices from a previous run are replayed from here on.
                await nursery.start(replayer.run)
                task_status.started()
                async for notice in notices:
                    try:
                        await replayer.write(notice.to_json().encode())
                    except HandoffError as exc:
                        self.dropped += 1
                        logger.warning("%s: notice %s not queued: %s", self.name, notice.key, exc)
                with trio.move_on_after(self.drain_timeout) as scope:
                    await replayer.wait_drained()
                if scope.cancelled_caught:
                    logger.warning(
                        "%s: undelivered notices left in %s, sent on next start",
                        self.name,
                        queue.directory,
                    )
                nursery.cancel_scope.cancel()

    async def _send(self, client: httpx.AsyncClient, data: bytes) -> None:
        key = json.loads(data)["key"]
        with trio.fail_after(self.timeout):
            resp = await client.post(
                self.url,
                content=data,
                headers={"content-type": "application/json", "idempotency-key": key},
            )
        if 200 <= resp.status_code < 300:
            return
        if 400 <= resp.status_code < 500 and resp.status_code not in (408, 409, 425, 429):
            # A notice the receiver refuses stays refused: retrying would block the ones behind.
            raise RecordRejected(f"{self.url} refused notice {key}: {resp.status_code}")
        raise WebhookError(f"{self.url}: {resp.status_code} {resp.text[:200]}")
