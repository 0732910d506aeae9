"""One ``[[alert]]``'s notifiers, and the task that hands each notice to them in order.

The service decides *what* to tell (fires, repeats, resolves); this is *how* it is told: every
durable notifier (webhook, Alertmanager: queued on disk) first, then the log and the command.
Kept apart so the delivery order, which is what makes a logged notice safe from a SIGKILL, reads
in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import trio

from .._groups import open_nursery
from ..specs import AlertSpec
from .alertmanager import AlertmanagerNotifier
from .firing import FiringEntry
from .notice import Notice
from .notify import NOTICE_BUFFER, CommandNotifier, WebhookNotifier, log_notice
from .queued import QueuedNotifier

__all__ = ["AlertNotifiers", "Notifier"]

logger = logging.getLogger("trioprobe.alerting")

Notifier = CommandNotifier | QueuedNotifier


class AlertNotifiers:
    """One ``[[alert]]``'s notifiers, and the task that hands notices to them.

    Notices come in through :meth:`notify` (synchronous, from a probe's owner task) into one
    bounded inbox. :meth:`dispatch` queues each batch in every durable notifier (on disk, with
    the alert state), and only then logs it and passes it to the command notifier: a logged
    notice is one a SIGKILL can no longer lose.
    """

    def __init__(
        self,
        spec: AlertSpec,
        drain_timeout: float,
        *,
        probe_labels: Mapping[str, Mapping[str, str]] | None = None,
        generator_url: Callable[[str, str], str] | None = None,
    ) -> None:
        self.spec = spec
        self.command = CommandNotifier(spec.command, spec.command_timeout) if spec.command else None
        self.durable: list[QueuedNotifier] = []
        if spec.webhook:
            self.durable.append(
                WebhookNotifier(
                    spec.webhook,
                    spec.webhook_queue_dir,
                    alert=spec.name,
                    timeout=spec.webhook_timeout,
                    drain_timeout=drain_timeout,
                )
            )
        if spec.alertmanager:
            self.durable.append(
                AlertmanagerNotifier(
                    spec.alertmanager,
                    spec.alertmanager_queue_dir,
                    alert=spec.name,
                    severity=spec.severity,
                    probe_labels=probe_labels,
                    generator_url=generator_url,
                    timeout=spec.alertmanager_timeout,
                    drain_timeout=drain_timeout,
                )
            )
        self.inbox, self._inbox_out = trio.open_memory_channel[Notice](NOTICE_BUFFER)
        self._command_in, self._command_out = trio.open_memory_channel[Notice](NOTICE_BUFFER)
        #: Notices dropped because the alert was :data:`NOTICE_BUFFER` notices behind.
        self.dropped = 0
        #: (probe, target) -> alerts a previous run left firing.
        self.restored: dict[tuple[str, str], FiringEntry] = {}

    @property
    def notifiers(self) -> list[Notifier]:
        return [*([self.command] if self.command else []), *self.durable]

    def notify(self, notice: Notice) -> None:
        try:
            self.inbox.send_nowait(notice)
        except trio.WouldBlock:
            self.dropped += 1
            logger.warning(
                "alert %r is %d notices behind: dropped a %s of %r",
                self.spec.name,
                NOTICE_BUFFER,
                notice.event,
                notice.transition.target,
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The alert has stopped (shutdown): nothing left to tell.
            pass

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the notifiers, then dispatch until the inbox is closed and drained."""
        async with open_nursery() as nursery:
            if self.command is not None:
                await nursery.start(self.command.run, self._command_out)
            for notifier in self.durable:
                await nursery.start(notifier.run)
                for entry in notifier.state.firing.values():
                    t = entry.notice.transition
                    self.restored.setdefault((t.probe, t.target), entry)
            task_status.started()
            try:
                await self._dispatch()
            finally:
                self._command_in.close()
                for notifier in self.durable:
                    notifier.close()

    async def _dispatch(self) -> None:
        async with self._inbox_out:
            async for first in self._inbox_out:
                batch = [first]
                while len(batch) < NOTICE_BUFFER:
                    try:
                        batch.append(self._inbox_out.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                for notifier in self.durable:
                    await notifier.enqueue(batch)
                for notice in batch:
                    if self.spec.log:
                        log_notice(notice)
                    if self.command is not None:
                        try:
                            self._command_in.send_nowait(notice)
                        except trio.WouldBlock:
                            self.dropped += 1
                            logger.warning(
                                "%s is %d notices behind: dropped one",
                                self.command.name,
                                NOTICE_BUFFER,
                            )
