"""The ``zmq`` probe type: one request/reply round trip per target and interval.

Targets are ZeroMQ addresses (``tcp://host:port``) of a REP or ROUTER server (ours, or anything
answering one-frame REQ requests). A probe succeeds when a one-frame reply arrives within the
probe's timeout and, if ``reply_regex`` is set, matches it. Each target keeps its own Lazy Pirate
:class:`~trioprobe.zmqnet.Client`: a timeout resets its connection (fresh identity), so a late
reply is never mistaken for the next probe's.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import attrs
import trio

from ..failures import Failure, FailureReason, Phase, classify, enter_phase
from ..results import ProbeResult
from ..zmqnet import Client, MessageDroppedError, ZmqNetError
from ..zmqnet.errors import MessageTooLargeError, ProtocolError, RemoteError, ReplyTooLargeError
from . import TargetsFn
from ._base import ClientPerTargetProbe, PerTargetClients

if TYPE_CHECKING:
    from ..specs import ProbeSpec

__all__ = ["Options", "ZmqProbe", "make_probe"]


@attrs.frozen
class Options:
    """Config keys of a ``zmq`` probe."""

    #: The request payload (UTF-8).
    message: str = "ping"
    #: If set, the reply (decoded as UTF-8) must match this regular expression (``re.search``).
    reply_regex: str | None = attrs.field(default=None)
    #: Name part of the client's routing id (``"<identity>-XXXX"``); default: the host name.
    identity: str | None = None
    #: Lazy Pirate attempts within one probe; each gets ``timeout / retries`` seconds.
    retries: int = attrs.field(default=1)

    @reply_regex.validator
    def _check_regex(self, _: object, value: str | None) -> None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"reply_regex is not a valid regular expression: {exc}") from None

    @retries.validator
    def _check_retries(self, _: object, value: int) -> None:
        if value < 1:
            raise ValueError(f"retries is a number of attempts and must be >= 1, got {value}")


class ZmqProbe(ClientPerTargetProbe[Client]):
    """Probes each target address with its own client; see the module docstring."""

    def __init__(
        self, options: Options, targets: TargetsFn, *, interval: float, timeout: float
    ) -> None:
        super().__init__(options, targets, interval=interval, timeout=timeout)
        self._payload = options.message.encode()
        self._pattern = re.compile(options.reply_regex) if options.reply_regex else None
        self._clients = PerTargetClients[Client](self._new_client, Client.aclose)

    def _new_client(self, target: str) -> Client:
        return Client(
            target,
            identity=self.options.identity,
            timeout=self.timeout / self.options.retries,
            retries=self.options.retries,
        )

    async def probe_once(self, target: str) -> ProbeResult:
        started = trio.current_time()
        try:
            client = self._clients.get(target)
            # ZeroMQ connects in the background: the wait is for the reply, however it is lost.
            enter_phase(Phase.WAIT, on_timeout=FailureReason.NO_REPLY)
            reply = await client.send(self._payload)
        except MessageDroppedError as exc:
            return ProbeResult(
                target,
                False,
                trio.current_time() - started,
                error=str(exc),
                timeout=True,
                failure=_NO_REPLY,
            )
        except (ZmqNetError, OSError) as exc:
            return ProbeResult(
                target,
                False,
                trio.current_time() - started,
                error=f"{type(exc).__name__}: {exc}",
                failure=_failure_of(exc),
            )
        latency = trio.current_time() - started
        if self._pattern is not None:
            text = reply.decode("utf-8", "replace")
            if not self._pattern.search(text):
                error = f"reply {text[:80]!r} did not match /{self._pattern.pattern}/"
                return ProbeResult(target, False, latency, error=error, failure=_REPLY_REGEX)
        return ProbeResult(target, True, latency)


_NO_REPLY = Failure(FailureReason.NO_REPLY)
_REPLY_REGEX = Failure(FailureReason.VALIDATION, validator="reply_regex")


def _failure_of(exc: BaseException) -> Failure:
    if isinstance(exc, ReplyTooLargeError | MessageTooLargeError):
        return Failure(FailureReason.BODY_TOO_LARGE)
    if isinstance(exc, ProtocolError):
        return Failure(FailureReason.PROTOCOL)
    if isinstance(exc, RemoteError):
        return Failure(FailureReason.HTTP_STATUS)  # the server's error frame: its status
    return classify(exc, Phase.CONNECT if isinstance(exc, OSError) else Phase.WAIT)


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> ZmqProbe:
    return ZmqProbe(options, targets, interval=spec.interval, timeout=spec.timeout)
