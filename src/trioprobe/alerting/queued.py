"""``QueuedNotifier``: what the durable HTTP notifiers (webhook, Alertmanager) share.

* Notices are appended to a handoff queue and a :class:`~trioprobe.handoff.WriteReplayer`
  delivers them in order, retrying while the receiver is down.
* :meth:`QueuedNotifier.enqueue` returns only once the notices are on disk *and* the alert state
  (:class:`~trioprobe.alerting.firing.FiringState`) says what is firing, so the caller may report
  the hand-over (the alert's log line) knowing a SIGKILL cannot lose it, and the next start can
  resolve what this one fired.
* A reply is read up to :data:`REPLY_LIMIT` bytes, undecoded, then the connection is dropped:
  a receiver answering with a gigabyte costs 64 KiB. ``timeout`` bounds the whole exchange
  (httpx's own 5 s default would otherwise cut a slower receiver short, forever). A redirect is
  not followed: it is a permanent failure of that notice (dropped, counted, logged with where
  it pointed), as retrying it would block every notice behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import httpx
import trio

from .._httpx_body import build_request
from ..handoff import HandoffError, RecordRejected, WriteReplayer, open_queue
from ..handoff.disk_queue import default_queue_dir, prepare_default_root
from .firing import FiringEntry, FiringState
from .notice import Notice

__all__ = ["REPLY_LIMIT", "DeliveryError", "QueuedNotifier", "Reply", "check_reply"]

logger = logging.getLogger("trioprobe.alerting")

#: Bytes of a receiver's reply that are read (the rest is never read: the connection is closed).
REPLY_LIMIT = 64 * 1024
#: Excerpt of a failed reply quoted in the error.
_EXCERPT = 200
#: 4xx statuses that mean "try again later" rather than "never".
_RETRYABLE_4XX = frozenset({408, 409, 425, 429})


class DeliveryError(Exception):
    """A receiver failed a request (it is retried)."""


class Reply:
    """The part of a reply that was read."""

    __slots__ = ("body", "location", "status")

    def __init__(self, status: int, body: bytes, location: str | None) -> None:
        self.status = status
        self.body = body
        self.location = location


def check_reply(url: str, reply: Reply, what: str, error: type[DeliveryError]) -> None:
    """Return for a 2xx; raise :class:`RecordRejected` (dropped) or ``error`` (retried)."""
    status = reply.status
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        raise RecordRejected(
            f"{url} answered {status} (a redirect to {reply.location or '?'}), which is not "
            f"followed: {what} dropped; configure the final URL"
        )
    if 400 <= status < 500 and status not in _RETRYABLE_4XX:
        raise RecordRejected(f"{url} refused {what}: {status}")
    excerpt = reply.body[:_EXCERPT].decode(errors="replace")
    raise error(f"{url}: {status} {excerpt}")


class QueuedNotifier:
    """Durable delivery of notices to one HTTP receiver (see the module doc).

    Subclasses give :meth:`record` (the queued bytes of a notice) and :meth:`send` (deliver
    one record).
    """

    #: Raised for a failed (retried) delivery.
    error: type[DeliveryError] = DeliveryError

    def __init__(
        self,
        name: str,
        queue_dir: str,
        *,
        default_dir: str,
        timeout: float,
        drain_timeout: float,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.name = name
        self.queue_dir = queue_dir or default_queue_dir(default_dir)
        self._default_dir = not queue_dir
        self.timeout = timeout
        self.drain_timeout = drain_timeout
        self._transport = transport
        self.replayer: WriteReplayer | None = None
        self.state = FiringState(self.queue_dir)
        #: Notices the queue refused (full, or a disk error).
        self.dropped = 0
        self._closing = trio.Event()

    # -- for subclasses ----------------------------------------------------------------------
    def record(self, notice: Notice, firing: FiringEntry | None) -> bytes:
        """The bytes queued for ``notice`` (``firing``: the alert's entry before it, if any)."""
        raise NotImplementedError

    async def send(self, client: httpx.AsyncClient, data: bytes) -> None:
        raise NotImplementedError

    def retry_max_interval(self) -> float:
        return 30.0

    async def background(self, client: httpx.AsyncClient) -> None:
        """Runs beside the replayer for as long as the notifier does (nothing by default)."""

    # -- the task ----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the queue and the alert state, replay what a previous run left, and deliver
        what :meth:`enqueue` adds until :meth:`close`; then deliver what is left for up to
        ``drain_timeout`` seconds (the rest stays on disk, delivered on the next start)."""
        if self._default_dir:
            await trio.to_thread.run_sync(prepare_default_root)
        client = httpx.AsyncClient(
            transport=self._transport,
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
        )
        async with open_queue(self.queue_dir) as queue, client:
            await trio.to_thread.run_sync(self.state.load_sync)
            retry_max = self.retry_max_interval()
            replayer = WriteReplayer(
                queue,
                partial(self.send, client),
                transient_errors=(self.error, httpx.HTTPError),
                retry_interval=min(0.1, retry_max),
                retry_max_interval=retry_max,
            )
            self.replayer = replayer
            async with trio.open_nursery() as nursery:
                await nursery.start(replayer.run)
                nursery.start_soon(self.background, client)
                task_status.started()
                await self._closing.wait()
                with trio.move_on_after(self.drain_timeout) as scope:
                    await replayer.wait_drained()
                if scope.cancelled_caught:
                    logger.warning(
                        "%s: undelivered notices left in %s, sent on next start",
                        self.name,
                        queue.directory,
                    )
                nursery.cancel_scope.cancel()

    def close(self) -> None:
        """No more :meth:`enqueue` calls: drain and end :meth:`run`."""
        self._closing.set()

    async def enqueue(self, notices: Sequence[Notice]) -> None:
        """Queue ``notices`` durably and record what is firing; return once both are on disk."""
        replayer = self.replayer
        if replayer is None:
            raise RuntimeError(f"{self.name} is not running")
        changed = False
        for notice in notices:
            firing = self.state.firing.get((notice.transition.probe, notice.transition.target))
            try:
                await replayer.write(self.record(notice, firing))
            except HandoffError as exc:
                self.dropped += 1
                logger.warning("%s: notice %s not queued: %s", self.name, notice.key, exc)
                continue
            self.state.apply(notice)
            changed = True
        if changed:
            try:
                await trio.to_thread.run_sync(self.state.save_sync)
            except OSError as exc:
                logger.warning(
                    "%s: alert state not saved to %s (%s): a restart may not resolve what "
                    "fired since",
                    self.name,
                    self.state.path,
                    exc,
                )

    async def post(
        self, client: httpx.AsyncClient, url: str, data: bytes, headers: dict[str, str]
    ) -> Reply:
        """POST ``data``; read at most :data:`REPLY_LIMIT` bytes of the reply, undecoded."""
        try:
            with trio.fail_after(self.timeout):
                request = build_request(client, "POST", url, content=data, headers=headers)
                resp = await client.send(request, stream=True)
                try:
                    body = await _read_bounded(resp)
                finally:
                    await resp.aclose()
                return Reply(resp.status_code, body, resp.headers.get("location"))
        except (trio.TooSlowError, httpx.TimeoutException):
            raise self.error(f"{url}: no complete reply within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise self.error(f"{url}: {type(exc).__name__}: {exc}") from exc


async def _read_bounded(resp: httpx.Response) -> bytes:
    """Up to :data:`REPLY_LIMIT` bytes of ``resp``'s body; past that the connection is closed.

    Closing the socket (rather than leaving the loop) ends httpx's nested body generators with a
    read error, so none is left half-iterated for the garbage collector.
    """
    body = bytearray()
    network = resp.extensions.get("network_stream")
    try:
        async for chunk in resp.aiter_raw():
            if len(body) >= REPLY_LIMIT:
                continue  # the socket is closed: the next read ends the loop
            body += chunk[: REPLY_LIMIT - len(body)]
            if len(body) >= REPLY_LIMIT:
                if network is None:
                    break
                await network.aclose()
    except httpx.HTTPError:
        if len(body) < REPLY_LIMIT:
            raise
    return bytes(body)
