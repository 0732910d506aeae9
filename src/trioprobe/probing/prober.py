"""The prober: etcd's ``xiang90/probing`` on Trio.

One task per probe id sends ``GET`` to an endpoint serving the health reply (see
:mod:`trioprobe.probing.health`) every ``interval`` seconds and keeps a live :class:`Status`:
counters, the smoothed round-trip time and the estimated clock difference with the remote peer.

The semantics follow the Go package (first probe one interval after ``add_http``; missed ticks
dropped; SRTT with a = 1/8; ``clock_diff = local_now - remote_now - srtt/2``; sticky endpoints
that rotate round-robin on failure; ``reset`` keeps the task), with two deliberate differences in
the RTT samples:

- the first sample seeds SRTT, where upstream starts it at 0 and so under-reports it at first
  (after n probes at a steady RTT r, etcd's SRTT is ``r * (1 - 7/8**n)``: 49 % of r after 5);
- a sample excludes connection set-up: when a probe had to open a connection (the first probe,
  or after the peer closed it), the TCP connect and TLS handshake time, which the trace of the
  request reports separately, is subtracted. Upstream's first sample includes it, so a first RTT
  of 3-5x the steady one biased SRTT (and ``clock_diff`` by half of that) for many probes.

What this adds is stated where it happens: a per-probe deadline in a Trio cancel scope, a
precise error for a malformed ``Now``, and an optional channel of :class:`ProbeRecord` (one per
probe; trioprobe's ``etcd_probing`` probe type turns them into its results).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import attrs
import httpx
import trio

from .._groups import open_nursery
from .._ticks import Ticker
from .._tls import load_ssl_context
from .._urls import check_http_url
from ._transport import Transport

__all__ = [
    "ALPHA",
    "BadHealthReply",
    "NotOK",
    "ProbeExistsError",
    "ProbeFailure",
    "ProbeNotFoundError",
    "ProbeRecord",
    "ProbeTimeout",
    "Prober",
    "ProbingError",
    "Status",
    "UnexpectedStatus",
    "open_prober",
    "parse_rfc3339_nano",
]

ALPHA = 0.125
"""The SRTT smoothing weight (RFC 6298's alpha), as in the reference."""


# --- errors -----------------------------------------------------------------------------------


class ProbingError(Exception):
    """Base of everything :mod:`trioprobe.probing` raises or records."""


class ProbeExistsError(ProbingError):
    """``add_http`` with an id that is already being probed (the reference's ``ErrExist``)."""

    def __init__(self, probe_id: str) -> None:
        super().__init__(f"probing: id exists: {probe_id!r}")
        self.probe_id = probe_id


class ProbeNotFoundError(ProbingError):
    """An operation named an id that is not being probed (the reference's ``ErrNotFound``)."""

    def __init__(self, probe_id: str) -> None:
        super().__init__(f"probing: id not found: {probe_id!r}")
        self.probe_id = probe_id


class ProbeFailure(ProbingError):
    """Why one probe failed, when the transport itself did not fail (then an httpx error is kept:
    the h11 path's typed errors are httpx's exception classes of the same names).

    Each names the endpoint, so ``Status.error`` is self-explanatory in a log line.
    """

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint


class UnexpectedStatus(ProbeFailure):
    """The endpoint answered with a status other than 200."""

    def __init__(self, endpoint: str, status_code: int) -> None:
        super().__init__(endpoint, f"got unexpected HTTP status code {status_code}")
        self.status_code = status_code


class BadHealthReply(ProbeFailure):
    """The body is not a health reply: not JSON, not an object, or ``Now`` missing or malformed."""


class NotOK(ProbeFailure):
    """The endpoint answered ``"OK": false``.

    The reference records ``nil`` as the error here (its ``err`` variable happens to be nil); a
    named error is more useful and changes nothing else.
    """

    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint, 'health reply says "OK": false')


class ProbeTimeout(ProbeFailure):
    """No complete reply within the probe's timeout (enforced by a Trio cancel scope)."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        super().__init__(endpoint, f"no reply within {timeout:g} s")
        self.timeout = timeout


# --- time parsing -------------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_minute_epochs: dict[str, int] = {}


def parse_rfc3339_nano(text: str) -> float:
    """Parse an RFC 3339 timestamp with up to nanosecond precision into seconds since the epoch.

    ``datetime.fromisoformat`` truncates to microseconds and, before 3.11, rejected ``Z``; Go
    emits nine digits and any offset, so this parses the exact grammar instead. Raises
    ``ValueError`` with the offending text.

    Every probe parses one of these, so the epoch of each (date, hour, minute, offset) is cached:
    consecutive replies share it and the parse costs a regex match and two ``int()`` calls.
    """
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    second, frac, zone = int(m.group(6)), m.group(7), m.group(8)
    if second > 60:  # 60 is a leap second, which Go accepts too
        raise ValueError(f"not an RFC 3339 time: {text!r} (second out of range)")
    key = text[:16] + zone
    base = _minute_epochs.get(key)
    if base is None:
        year, month, day, hour, minute = (int(g) for g in m.groups()[:5])
        try:
            moment = datetime(year, month, day, hour, minute, tzinfo=UTC)
        except ValueError as exc:
            raise ValueError(f"not an RFC 3339 time: {text!r} ({exc})") from None
        base = (moment - _EPOCH) // timedelta(seconds=1)
        if zone not in ("Z", "z"):
            sign = 1 if zone[0] == "+" else -1
            base -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
        if len(_minute_epochs) >= 256:
            _minute_epochs.clear()
        _minute_epochs[key] = base
    return base + second + (int(frac) / 10 ** len(frac) if frac else 0.0)


# --- status -------------------------------------------------------------------------------------


@attrs.define(eq=False)
class Status:
    """The live state of one probe id (not a snapshot: it changes as probes complete).

    The reference guards each getter with a mutex; in Trio only one task runs at a time, so the
    attributes are read directly. Durations are seconds.
    """

    probe_id: str
    _total: int = 0
    _loss: int = 0
    _health: bool = False
    _error: Exception | None = None
    _srtt: float = 0.0
    _clock_diff: float = 0.0
    _missed_ticks: int = 0
    _stopped: trio.Event = attrs.field(factory=trio.Event)

    @property
    def total(self) -> int:
        """Probes completed (success or failure) since the start or the last reset."""
        return self._total

    @property
    def loss(self) -> int:
        """Failed probes since the start or the last reset."""
        return self._loss

    @property
    def health(self) -> bool:
        """Whether the last probe succeeded (False before the first probe)."""
        return self._health

    @property
    def error(self) -> Exception | None:
        """Why the last probe failed: an httpx error or a :class:`ProbeFailure`; None if healthy."""
        return self._error

    @property
    def srtt(self) -> float:
        """Smoothed round-trip time in seconds (0 before the first success). Survives failures."""
        return self._srtt

    @property
    def clock_diff(self) -> float:
        """Estimated ``local - remote`` clock difference in seconds; positive: local clock ahead."""
        return self._clock_diff

    @property
    def missed_ticks(self) -> int:
        """Ticks dropped because a probe overran them (not in the reference; never reset)."""
        return self._missed_ticks

    @property
    def stopped(self) -> bool:
        """Whether the probe was removed (or its prober closed)."""
        return self._stopped.is_set()

    async def wait_stopped(self) -> None:
        """Return once the probe is removed or its prober closed (the reference's StopNotify)."""
        await self._stopped.wait()

    def record_success(self, rtt: float, local_now: float, remote_now: float) -> None:
        """Account one good reply: the SRTT update and clock estimate of the reference."""
        self._total += 1
        self._health = True
        self._error = None
        last = self._srtt or rtt  # the first sample seeds SRTT (also after a reset)
        self._srtt = (1 - ALPHA) * last + ALPHA * rtt
        self._clock_diff = local_now - remote_now - self._srtt / 2

    def record_failure(self, error: Exception) -> None:
        """Account one failed probe; SRTT and clock difference keep their last values."""
        self._total += 1
        self._loss += 1
        self._health = False
        self._error = error

    def reset(self) -> None:
        """Zero the statistics, as the reference's ``Reset`` does (the task keeps probing)."""
        self._total = 0
        self._loss = 0
        self._health = False
        self._error = None
        self._srtt = 0.0
        self._clock_diff = 0.0

    def __repr__(self) -> str:
        return (
            f"Status({self.probe_id!r}, total={self._total}, loss={self._loss}, "
            f"health={self._health}, srtt={self._srtt * 1e3:.3f}ms, "
            f"clock_diff={self._clock_diff * 1e3:+.3f}ms, error={self._error!r})"
        )


@attrs.frozen
class ProbeRecord:
    """One completed probe, as sent to ``open_prober(records=...)``.

    A plain value of this package (not trioprobe's ``ProbeResult``), so the prober stands alone;
    ``trioprobe.probes.etcd_probing.probe_result`` converts one for the stats keeper and alerting.
    """

    #: The probe id.
    probe_id: str
    #: The endpoint this probe asked.
    endpoint: str
    success: bool
    #: This probe's round-trip time in seconds, connection set-up excluded; 0.0 on failure.
    rtt: float
    #: The id's smoothed RTT and ``local - remote`` clock difference (seconds) after this probe.
    srtt: float
    clock_diff: float
    #: Why it failed: an httpx error or a :class:`ProbeFailure`; None on success.
    error: Exception | None = None
    #: How late (seconds) the probe started relative to its tick.
    start_lateness: float = 0.0

    @property
    def timeout(self) -> bool:
        """Whether the probe failed by missing its deadline."""
        return isinstance(self.error, ProbeTimeout)

    @property
    def error_text(self) -> str | None:
        """The error as one line naming the endpoint and, for transport errors, the kind."""
        error = self.error
        if error is None:
            return None
        if isinstance(error, ProbeFailure):
            return str(error)  # already names the endpoint
        # httpx's messages ("All connection attempts failed") name neither the URL nor the kind
        # of failure; a dashboard line needs both.
        return f"{self.endpoint}: {type(error).__name__}: {error}".rstrip(": ")


# --- the prober ---------------------------------------------------------------------------------


def _check_endpoint(endpoint: str) -> httpx.URL:
    try:
        return check_http_url(endpoint)
    except ValueError as exc:
        raise ValueError(f"probing: bad endpoint URL {endpoint!r}: {exc}") from None


@attrs.define(eq=False)
class _Probe:
    status: Status
    endpoints: tuple[httpx.URL, ...]
    interval: float
    timeout: float
    first: float
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)


class Prober:
    """Probes health endpoints, one task per id; create it with :func:`open_prober`.

    ``add_http``, ``remove``, ``reset``, ``remove_all`` and ``status`` are synchronous, like the
    reference's: they only start or cancel tasks in the prober's nursery.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        client: httpx.AsyncClient | None,
        max_in_flight: int | None,
        records: trio.MemorySendChannel[ProbeRecord] | None,
        wall_clock: Callable[[], float],
        on_tick: Callable[[str, float], None] | None,
    ) -> None:
        self._nursery = nursery
        self._client = client
        self._limiter = trio.CapacityLimiter(max_in_flight) if max_in_flight else None
        self._records = records
        self._wall_clock = wall_clock
        self._on_tick = on_tick
        self._probes: dict[str, _Probe] = {}
        self._closed = False

    def add_http(
        self,
        probe_id: str,
        interval: float,
        endpoints: Sequence[str],
        *,
        timeout: float | None = None,
        first_probe_after: float | None = None,
    ) -> Status:
        """Start probing ``endpoints`` every ``interval`` seconds under ``probe_id``.

        The first probe happens one interval from now, as in the reference, unless
        ``first_probe_after`` says otherwise: many ids added at once all tick at the same instant,
        and spreading their phases is what keeps a thousand of them on time. ``timeout`` bounds
        each probe (default: the interval, so a hung peer never stalls more than one tick).
        Everything is validated before anything starts: ``ValueError`` for an empty list, a bad
        URL or a non-positive interval or timeout; :class:`ProbeExistsError` for a known id.
        Returns the live :class:`Status`.
        """
        if self._closed:
            raise ProbingError("probing: the prober is closed")
        if probe_id in self._probes:
            raise ProbeExistsError(probe_id)
        if isinstance(endpoints, str):
            raise TypeError("probing: endpoints must be a sequence of URLs, not one string")
        if not endpoints:
            raise ValueError(f"probing: no endpoints given for {probe_id!r}")
        urls = tuple(_check_endpoint(e) for e in endpoints)
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(
                f"probing: interval must be a positive number of seconds: {interval!r}"
            )
        timeout = interval if timeout is None else timeout
        if not timeout > 0:
            raise ValueError(f"probing: timeout must be positive: {timeout!r}")
        first = interval if first_probe_after is None else first_probe_after
        if not (first >= 0 and math.isfinite(first)):
            raise ValueError(f"probing: first_probe_after must be >= 0: {first_probe_after!r}")
        probe = _Probe(Status(probe_id), urls, float(interval), float(timeout), float(first))
        self._probes[probe_id] = probe
        self._nursery.start_soon(self._run, probe, name=f"probing:{probe_id}")
        return probe.status

    def remove(self, probe_id: str) -> None:
        """Stop probing ``probe_id``; its status reports stopped at once, even mid-probe."""
        probe = self._probes.pop(probe_id, None)
        if probe is None:
            raise ProbeNotFoundError(probe_id)
        self._stop(probe)

    def remove_all(self) -> None:
        """Stop every probe."""
        probes, self._probes = self._probes, {}
        for probe in probes.values():
            self._stop(probe)

    def reset(self, probe_id: str) -> None:
        """Zero the statistics of ``probe_id``; probing goes on (endpoint pinning is kept)."""
        self.status(probe_id).reset()

    def status(self, probe_id: str) -> Status:
        """The live status of ``probe_id``."""
        probe = self._probes.get(probe_id)
        if probe is None:
            raise ProbeNotFoundError(probe_id)
        return probe.status

    def ids(self) -> list[str]:
        """The ids being probed, in the order they were added."""
        return list(self._probes)

    def __contains__(self, probe_id: object) -> bool:
        return probe_id in self._probes

    def __len__(self) -> int:
        return len(self._probes)

    def _stop(self, probe: _Probe) -> None:
        probe.scope.cancel()
        probe.status._stopped.set()

    def _close(self) -> None:
        self._closed = True
        self.remove_all()

    async def _run(self, probe: _Probe) -> None:
        """One probe id: the reference's ticker loop, over its own connections."""
        with probe.scope:
            transport = Transport(probe.endpoints, self._client)
            try:
                await self._loop(probe, transport)
            finally:
                with trio.move_on_after(1.0, shield=True):
                    await transport.aclose()

    async def _loop(self, probe: _Probe, transport: Transport) -> None:
        interval, status = probe.interval, probe.status
        pinned = 0
        # Go's ticker: an overdue tick fires at once, the ones after it are dropped.
        ticker = Ticker(interval, first_at=trio.current_time() + probe.first, late="fire")
        async for tick in ticker:
            status._missed_ticks += tick.missed
            lateness = tick.lateness
            if self._on_tick is not None:
                self._on_tick(status.probe_id, lateness)
            ok = await self._probe_once(probe, transport, pinned, lateness)
            if not ok:
                pinned = (pinned + 1) % len(probe.endpoints)

    async def _probe_once(
        self, probe: _Probe, transport: Transport, index: int, lateness: float = 0.0
    ) -> bool:
        """One probe of endpoint ``index``; records it unless the id was removed meanwhile.
        Returns success."""
        endpoint = probe.endpoints[index]
        if self._limiter is not None:
            # Waiting for a slot is not part of the RTT nor of the probe's deadline.
            async with self._limiter:
                outcome = await _request(probe, transport, index)
        else:
            outcome = await _request(probe, transport, index)
        status = probe.status
        if status.stopped:
            # Removed while the reply was on its way (Trio delivers a result that was ready
            # before the cancel): the reference never records after StopNotify either.
            return True
        if isinstance(outcome, Exception):
            status.record_failure(outcome)
            rtt = 0.0
        else:
            rtt, remote_now = outcome
            status.record_success(rtt, self._wall_clock(), remote_now)
        if self._records is not None:
            error = outcome if isinstance(outcome, Exception) else None
            record = ProbeRecord(
                status.probe_id,
                str(endpoint),
                error is None,
                rtt,
                status.srtt,
                status.clock_diff,
                error,
                lateness,
            )
            try:
                # No checkpoint when there is room (``send`` always yields); back-pressure if full.
                self._records.send_nowait(record)
            except trio.WouldBlock:
                await self._records.send(record)
        return not isinstance(outcome, Exception)


async def _request(
    probe: _Probe, transport: Transport, index: int
) -> tuple[float, float] | Exception:
    """GET endpoint ``index`` under the probe's deadline: ``(rtt, remote_now)`` or the failure.

    The RTT excludes connection set-up (see the module docstring).
    """
    endpoint = probe.endpoints[index]
    with trio.move_on_after(probe.timeout):
        start = trio.current_time()  # just before the request is built, as in the reference
        try:
            exchange = await transport.get(index)
        except (httpx.HTTPError, UnicodeError) as exc:  # UnicodeError: a bad host name
            return exc
        if exchange.status != 200:
            return UnexpectedStatus(str(endpoint), exchange.status)
        remote_now = _decode_health(str(endpoint), exchange.body)
        if isinstance(remote_now, Exception):
            return remote_now
        return trio.current_time() - start - exchange.setup_time, remote_now
    return ProbeTimeout(str(endpoint), probe.timeout)


_FAST_PREFIX = b'{"OK":true,"Now":"'


def _decode_health(endpoint: str, body: bytes) -> float | ProbeFailure:
    """The remote ``Now`` of a health reply, or why the body is not a good one."""
    if body.startswith(_FAST_PREFIX):
        # The exact bytes etcd and our health app send: skip the JSON decoder (a third of the
        # per-reply cost). Anything else, including a malformed time, takes the general path.
        end = body.find(b'"', len(_FAST_PREFIX))
        if end > 0 and body[end:].rstrip() == b'"}':
            try:
                return parse_rfc3339_nano(body[len(_FAST_PREFIX) : end].decode("ascii"))
            except ValueError:
                pass
    try:
        reply = json.loads(body)
    except ValueError as exc:
        return BadHealthReply(endpoint, f"reply is not JSON ({exc}): {body[:80]!r}")
    if not isinstance(reply, dict):
        return BadHealthReply(endpoint, f"reply is not a JSON object: {body[:80]!r}")
    ok = reply.get("OK")
    if "OK" not in reply:
        # Go's decoder matches field names case-insensitively; so do we (rarely taken path).
        ok = next((v for k, v in reply.items() if k.lower() == "ok"), False)
    if not isinstance(ok, bool):
        return BadHealthReply(endpoint, f'"OK" is not a boolean: {ok!r}')
    if not ok:
        return NotOK(endpoint)
    now = reply.get("Now")
    if now is None:
        now = next((v for k, v in reply.items() if k.lower() == "now"), None)
    if not isinstance(now, str):
        return BadHealthReply(endpoint, f'"Now" is missing or not a string: {now!r}')
    try:
        return parse_rfc3339_nano(now)
    except ValueError:
        return BadHealthReply(endpoint, f'"Now" is not an RFC 3339 time: {now!r}')


@asynccontextmanager
async def open_prober(
    client: httpx.AsyncClient | None = None,
    *,
    max_in_flight: int | None = None,
    records: trio.MemorySendChannel[ProbeRecord] | None = None,
    wall_clock: Callable[[], float] = time.time,
    on_tick: Callable[[str, float], None] | None = None,
) -> AsyncIterator[Prober]:
    """Open a :class:`Prober` whose probe tasks live in a nursery inside this block.

    - ``client``: used for every probe and never closed here (the caller owns it). Without one,
      each probe id gets its own client (sharing one SSL context), closed when the id stops.
    - ``max_in_flight``: bound concurrent requests (a ``CapacityLimiter``); worth setting when
      many ids share one ``client``, whose pool slows down at high queue depth.
    - ``records``: every probe is also sent there as a :class:`ProbeRecord` (back-pressure when
      the channel is full). Not closed here.
    - ``wall_clock``: the local clock compared with the remote ``Now`` (injectable for tests).
    - ``on_tick``: instrumentation, called as ``on_tick(id, lateness)`` when a probe starts,
      with how late it starts relative to its tick.

    Leaving the block stops (and cancels) every probe; statuses report stopped.
    """
    if client is None:
        # Built once per process, in a thread: never on the loop inside a probe's deadline.
        await load_ssl_context()
    async with open_nursery() as nursery:
        prober = Prober(
            nursery,
            client=client,
            max_in_flight=max_in_flight,
            records=records,
            wall_clock=wall_clock,
            on_tick=on_tick,
        )
        try:
            yield prober
        finally:
            prober._close()
