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

import json
import logging
import subprocess

import httpx
import trio

from .._spawn import EscapeWatch, run_in_group
from .._templates import check_template as _check_template
from .._templates import render_template
from ..handoff.disk_queue import default_queue_dir
from .firing import FiringEntry
from .notice import Event, Notice
from .queued import DeliveryError, QueuedNotifier, check_reply

__all__ = [
    "COMMAND_FIELDS",
    "CommandNotifier",
    "Event",
    "Notice",
    "WebhookError",
    "WebhookNotifier",
    "check_template",
    "log_notice",
]

logger = logging.getLogger("trioprobe.alerting")

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
        "failure",
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


def log_notice(notice: Notice) -> None:
    t = notice.transition
    # One level for fire, repeat and resolve: a log filtered at WARNING must not show an alert
    # firing and never resolving.
    logger.log(
        logging.WARNING,
        "alert %r %s: probe %r target %r is %s (%d of last %d failed)%s%s",
        t.alert,
        notice.event,
        t.probe,
        t.target,
        t.new,
        t.failures,
        t.total,
        f": {t.failure}" if t.failure and notice.event != "resolve" else "",
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
        #: Counts the processes that left the command's process group and outlived it.
        self.watch = EscapeWatch(f"alert {self.name}")
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
                done = await run_in_group(
                    argv, self.watch, stdin=b"", stdout=subprocess.DEVNULL, capture_stderr=True
                )
            except OSError as exc:
                why = f"could not start: {exc}"
            else:
                if done.returncode != 0:
                    tail = done.stderr.decode(errors="replace")[-_STDERR_TAIL:].strip()
                    why = f"exited with {done.returncode}" + (f": {tail}" if tail else "")
        if scope.cancelled_caught:
            why = f"killed (with its process group) after its timeout of {self.timeout:g} s"
        await self.watch.sweep_if_due()
        if why is None:
            self.succeeded += 1
            return True
        self.failed += 1
        logger.warning(
            "alert %r: %s %s for %s", notice.transition.alert, self.name, why, notice.event
        )
        return False


class WebhookError(DeliveryError):
    """The webhook receiver failed a request (it is retried)."""


def default_webhook_dir(alert: str) -> str:
    return default_queue_dir(f"alert-{alert}")


class WebhookNotifier(QueuedNotifier):
    """POSTs each notice as JSON to ``url``, durably, through a handoff queue (see module doc)."""

    error = WebhookError

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
        super().__init__(
            f"webhook {url}",
            queue_dir,
            default_dir=f"alert-{alert or url}",
            timeout=timeout,
            drain_timeout=drain_timeout,
            transport=transport,
        )
        self.url = url

    def retry_max_interval(self) -> float:
        return WEBHOOK_RETRY_MAX_INTERVAL

    def record(self, notice: Notice, firing: FiringEntry | None) -> bytes:
        return notice.to_json().encode()

    async def send(self, client: httpx.AsyncClient, data: bytes) -> None:
        key = json.loads(data)["key"]
        headers = {"content-type": "application/json", "idempotency-key": key}
        reply = await self.post(client, self.url, data, headers)
        check_reply(self.url, reply, f"notice {key}", WebhookError)
