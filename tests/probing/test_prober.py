"""The Prober's semantics, under ``autojump_clock`` with ``httpx.MockTransport``.

Every timing assertion here is exact: the mock clock only moves when all tasks are blocked, so a
handler that ``await trio.sleep(rtt)`` produces an RTT of exactly ``rtt``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
import trio.testing

from trioprobe.probing import (
    BadHealthReply,
    NotOK,
    ProbeExistsError,
    ProbeNotFoundError,
    Prober,
    ProbeRecord,
    ProbeTimeout,
    ProbingError,
    Status,
    UnexpectedStatus,
    open_prober,
)
from trioprobe.probing.health import format_rfc3339_nano
from trioprobe.probing.prober import ALPHA

URL = "http://peer-a:2380/raft/probing"
LOCAL_NOW = 1_700_000_000.0


def health(now: float = LOCAL_NOW, ok: bool = True) -> httpx.Response:
    return httpx.Response(200, json={"OK": ok, "Now": format_rfc3339_nano(round(now * 1e9))})


Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


@asynccontextmanager
async def prober_with(handler: Handler, **kwargs: object) -> AsyncIterator[Prober]:
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client,
        open_prober(client, wall_clock=lambda: LOCAL_NOW, **kwargs) as prober,  # type: ignore[arg-type]
    ):
        yield prober


class Recorder:
    """A mock peer: records when each request arrives; replies after ``rtts`` (cycled)."""

    def __init__(self, rtts: list[float] | None = None, remote_now: float = LOCAL_NOW) -> None:
        self.rtts = rtts or [0.0]
        self.remote_now = remote_now
        self.starts: list[float] = []
        self.hosts: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        rtt = self.rtts[min(len(self.starts), len(self.rtts) - 1)]
        self.starts.append(trio.current_time())
        self.hosts.append(request.url.host)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await trio.sleep(rtt)
        except trio.Cancelled:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        return health(self.remote_now)


# --- timing -------------------------------------------------------------------------------------


async def test_first_probe_one_interval_after_add_then_every_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Recorder([0.1])
    async with prober_with(peer) as prober:
        t0 = trio.current_time()
        status = prober.add_http("a", 2.0, [URL])
        await trio.sleep(1.999)
        assert peer.starts == []
        assert status.total == 0
        await trio.sleep(5.0)
        assert [s - t0 for s in peer.starts] == pytest.approx([2.0, 4.0, 6.0])
        assert status.total == 3
        assert status.loss == 0
        assert status.health is True
        assert status.missed_ticks == 0


async def test_first_probe_after_sets_the_phase(autojump_clock: trio.testing.MockClock) -> None:
    peer = Recorder([0.0])
    async with prober_with(peer) as prober:
        t0 = trio.current_time()
        prober.add_http("a", 2.0, [URL], first_probe_after=0.5)
        prober.add_http("b", 2.0, [URL], first_probe_after=0.0)
        await trio.sleep(3.0)
        assert sorted(s - t0 for s in peer.starts) == pytest.approx([0.0, 0.5, 2.0, 2.5])
        with pytest.raises(ValueError, match="first_probe_after must be >= 0"):
            prober.add_http("c", 2.0, [URL], first_probe_after=-1.0)


async def test_overrun_drops_missed_ticks_and_keeps_the_grid(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Probe 1 (tick 1) takes 2.5 s: tick 2 is held (Go's one-slot ticker channel) and served at
    # 3.5, tick 3 is dropped, then probing resumes on the grid at 4, 5, ...
    peer = Recorder([2.5, 0.0])
    async with prober_with(peer) as prober:
        t0 = trio.current_time()
        status = prober.add_http("a", 1.0, [URL], timeout=10.0)
        await trio.sleep(5.5)
        assert [s - t0 for s in peer.starts] == pytest.approx([1.0, 3.5, 4.0, 5.0])
        assert status.missed_ticks == 1
        assert peer.max_in_flight == 1


async def test_steady_overrun_never_bursts(autojump_clock: trio.testing.MockClock) -> None:
    peer = Recorder([2.5])
    async with prober_with(peer) as prober:
        t0 = trio.current_time()
        status = prober.add_http("a", 1.0, [URL], timeout=10.0)
        await trio.sleep(10.0)
        # One probe at a time, back to back: ticks that passed meanwhile are dropped.
        assert [s - t0 for s in peer.starts] == pytest.approx([1.0, 3.5, 6.0, 8.5])
        assert peer.max_in_flight == 1
        assert status.total == 3
        assert status.missed_ticks == 1 + 2 + 1


async def test_on_tick_reports_zero_lateness_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[tuple[str, float]] = []
    peer = Recorder([0.1])
    async with prober_with(peer, on_tick=lambda i, late: seen.append((i, late))) as prober:
        prober.add_http("a", 1.0, [URL])
        await trio.sleep(3.5)
    assert seen == [("a", 0.0)] * 3


# --- statistics ---------------------------------------------------------------------------------


async def test_srtt_sequence_for_given_rtts(autojump_clock: trio.testing.MockClock) -> None:
    rtts = [0.010, 0.020, 0.030, 0.005, 0.100]
    peer = Recorder(rtts)
    async with prober_with(peer) as prober:
        status = prober.add_http("a", 1.0, [URL])
        expected, srtt = [], 0.0
        for rtt in rtts:
            srtt = (1 - ALPHA) * (srtt or rtt) + ALPHA * rtt
            expected.append(srtt)
        got = []
        await trio.sleep(0.5)
        for _ in rtts:
            await trio.sleep(1.0)
            got.append(status.srtt)
        assert got == pytest.approx(expected, abs=1e-9)
        # Spelled out: the first sample seeds SRTT, then 7/8 old + 1/8 new.
        assert got[0] == pytest.approx(0.010)
        assert got[1] == pytest.approx(0.875 * 0.010 + 0.125 * 0.020)
        assert status.total == 5


@pytest.mark.parametrize(("remote_offset", "rtt"), [(-0.5, 0.1), (2.0, 0.04), (0.0, 0.0)])
async def test_clock_diff_is_local_minus_remote_minus_half_srtt(
    autojump_clock: trio.testing.MockClock, remote_offset: float, rtt: float
) -> None:
    # remote clock = local + offset, so clock_diff = -offset - srtt/2 (positive: local ahead).
    peer = Recorder([rtt], remote_now=LOCAL_NOW + remote_offset)
    async with prober_with(peer) as prober:
        status = prober.add_http("a", 1.0, [URL])
        await trio.sleep(1.5)
        assert status.srtt == pytest.approx(rtt)
        assert status.clock_diff == pytest.approx(-remote_offset - rtt / 2, abs=1e-6)


@pytest.mark.parametrize(
    "body",
    [
        b'{"OK":true,"Now":"2023-11-14T22:13:19.5Z"}\n',
        b'{"OK": true, "Now": "2023-11-14T22:13:19.500000000Z"}',
        b'{"Now":"2023-11-14T23:13:19.5+01:00","OK":true,"Extra":1}',
        b'{"ok":true,"now":"2023-11-14T22:13:19.5Z"}',  # Go matches field names ignoring case
        b'{"OK":true,"Now":"2023-11-14T22:13:19.5Z"}  \r\n',
    ],
)
async def test_health_reply_variants_decode_alike(
    autojump_clock: trio.testing.MockClock, body: bytes
) -> None:
    async def peer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    async with prober_with(peer) as prober:
        status = prober.add_http("a", 1.0, [URL])
        await trio.sleep(1.5)
        assert status.health, status.error
        assert status.clock_diff == pytest.approx(LOCAL_NOW - 1_699_999_999.5)


# --- failures -----------------------------------------------------------------------------------


async def _connect_error(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def _reply(response: httpx.Response) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        return response

    return handler


FAILURES: list[tuple[str, Handler, type[Exception], str]] = [
    ("transport", _connect_error, httpx.ConnectError, "connection refused"),
    ("status", _reply(httpx.Response(503, text="busy")), UnexpectedStatus, "status code 503"),
    ("not json", _reply(httpx.Response(200, text="hello")), BadHealthReply, "not JSON"),
    ("not object", _reply(httpx.Response(200, json=[1])), BadHealthReply, "not a JSON object"),
    ("ok false", _reply(health(ok=False)), NotOK, '"OK": false'),
    ("ok not bool", _reply(httpx.Response(200, json={"OK": "yes"})), BadHealthReply, "boolean"),
    ("no now", _reply(httpx.Response(200, json={"OK": True})), BadHealthReply, '"Now" is missing'),
    (
        "bad now",
        _reply(httpx.Response(200, json={"OK": True, "Now": "half past ten"})),
        BadHealthReply,
        "\"Now\" is not an RFC 3339 time: 'half past ten'",
    ),
]


@pytest.mark.parametrize(
    ("handler", "kind", "message"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES]
)
async def test_failure_kinds_keep_srtt_and_clock_diff(
    autojump_clock: trio.testing.MockClock, handler: Handler, kind: type[Exception], message: str
) -> None:
    good = True

    async def peer(request: httpx.Request) -> httpx.Response:
        await trio.sleep(0.02)
        if good:
            return health(LOCAL_NOW - 1.0)
        return await handler(request)

    async with prober_with(peer) as prober:
        status = prober.add_http("a", 1.0, [URL])
        await trio.sleep(1.5)
        assert status.health is True
        srtt, clock_diff = status.srtt, status.clock_diff
        assert srtt == pytest.approx(0.02)
        assert clock_diff == pytest.approx(1.0 - 0.01)
        good = False
        await trio.sleep(2.0)
        assert (status.total, status.loss, status.health) == (3, 2, False)
        assert isinstance(status.error, kind)
        assert message in str(status.error)
        if not isinstance(status.error, httpx.HTTPError):
            assert URL in str(status.error)  # names the endpoint
        assert (status.srtt, status.clock_diff) == (srtt, clock_diff)
        good = True
        await trio.sleep(1.0)
        assert (status.total, status.loss, status.health) == (4, 2, True)
        assert status.error is None


async def test_timeout_defaults_to_the_interval_and_keeps_the_cadence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Recorder([math.inf])
    async with prober_with(peer) as prober:
        t0 = trio.current_time()
        status = prober.add_http("a", 1.0, [URL])
        await trio.sleep(4.5)
        # Each probe is cut at the next tick, which is then served at once: no tick is lost.
        assert [s - t0 for s in peer.starts] == pytest.approx([1.0, 2.0, 3.0, 4.0])
        assert (status.total, status.loss, status.health) == (3, 3, False)
        assert isinstance(status.error, ProbeTimeout)
        assert "no reply within 1 s" in str(status.error)
        assert status.missed_ticks == 0
        assert peer.cancelled == 3


async def test_explicit_timeout(autojump_clock: trio.testing.MockClock) -> None:
    peer = Recorder([0.5, 0.1])
    async with prober_with(peer) as prober:
        status = prober.add_http("a", 1.0, [URL], timeout=0.3)
        await trio.sleep(1.9)
        assert isinstance(status.error, ProbeTimeout)
        assert status.srtt == 0.0
        await trio.sleep(1.0)
        assert status.health is True
        assert status.srtt == pytest.approx(0.1)


# --- endpoints ----------------------------------------------------------------------------------


async def test_endpoints_are_sticky_until_failure_then_round_robin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    down: set[str] = set()
    hosts: list[str] = []

    async def peer(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        if request.url.host in down:
            raise httpx.ConnectError("down", request=request)
        return health()

    endpoints = [f"http://{h}:2380/raft/probing" for h in "abc"]
    async with prober_with(peer) as prober:
        status = prober.add_http("p", 1.0, endpoints)
        await trio.sleep(3.5)
        assert hosts == ["a", "a", "a"]
        down.add("a")
        await trio.sleep(3.0)  # a fails -> b, which works and stays pinned
        assert hosts[3:] == ["a", "b", "b"]
        down.update({"b", "c"})
        await trio.sleep(3.0)  # b fails -> c fails -> a fails
        assert hosts[6:] == ["b", "c", "a"]
        down.clear()
        await trio.sleep(2.0)  # pinned on b now (after a failed), and it works again
        assert hosts[9:] == ["b", "b"]
        assert status.health is True


# --- lifecycle ----------------------------------------------------------------------------------


async def test_reset_zeroes_counters_keeps_task_and_pinning(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fail_a = True
    hosts: list[str] = []

    async def peer(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        await trio.sleep(0.05 if len(hosts) < 4 else 0.01)
        if request.url.host == "a" and fail_a:
            return httpx.Response(500)
        return health(LOCAL_NOW - 3.0)

    endpoints = ["http://a/raft/probing", "http://b/raft/probing"]
    async with prober_with(peer) as prober:
        status = prober.add_http("p", 1.0, endpoints)
        await trio.sleep(3.5)
        assert (status.total, status.loss) == (3, 1)
        assert status.srtt > 0
        prober.reset("p")
        assert (status.total, status.loss, status.health, status.error) == (0, 0, False, None)
        assert (status.srtt, status.clock_diff) == (0.0, 0.0)
        fail_a = False
        await trio.sleep(1.0)
        # Still running, still pinned on b, and SRTT re-seeded by the first sample after reset.
        assert (status.total, status.loss, status.health) == (1, 0, True)
        assert hosts == ["a", "b", "b", "b"]
        assert status.srtt == pytest.approx(0.01)
        assert status.clock_diff == pytest.approx(3.0 - 0.005)


async def test_remove_while_a_probe_is_in_flight(autojump_clock: trio.testing.MockClock) -> None:
    peer = Recorder([5.0])
    async with prober_with(peer) as prober:
        status = prober.add_http("a", 1.0, [URL], timeout=10.0)
        await trio.sleep(1.5)
        assert peer.in_flight == 1
        assert not status.stopped
        prober.remove("a")
        assert status.stopped  # at once, like closing the reference's stop channel
        with trio.fail_after(0.001):
            await status.wait_stopped()
        await trio.sleep(10.0)
        assert peer.cancelled == 1
        assert len(peer.starts) == 1
        assert status.total == 0  # the cancelled probe is not recorded
        assert "a" not in prober
        with pytest.raises(ProbeNotFoundError, match="'a'"):
            prober.status("a")
        # The id can be used again.
        again = prober.add_http("a", 1.0, [URL], timeout=10.0)
        assert again is not status


async def test_reply_ready_before_remove_is_not_recorded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    arrived, release = trio.Event(), trio.Event()

    async def peer(request: httpx.Request) -> httpx.Response:
        arrived.set()
        await release.wait()
        return health()

    async with prober_with(peer) as prober:
        status = prober.add_http("a", 1.0, [URL])
        await arrived.wait()
        # Wake the probe and remove it with no checkpoint in between: the probe task resumes with
        # its reply in hand and only sees the cancellation at its next checkpoint.
        release.set()
        prober.remove("a")
        await trio.sleep(3.0)
        assert status.total == 0
        assert status.health is False


async def test_remove_all_and_closing_stop_every_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Recorder([0.0])
    async with prober_with(peer) as prober:
        first = [prober.add_http(i, 1.0, [URL]) for i in "ab"]
        await trio.sleep(1.5)
        prober.remove_all()
        assert all(s.stopped for s in first)
        assert len(prober) == 0
        count = len(peer.starts)
        await trio.sleep(5.0)
        assert len(peer.starts) == count == 2
        later = prober.add_http("c", 1.0, [URL])
        assert prober.ids() == ["c"]
    assert later.stopped
    await later.wait_stopped()


async def test_errors_for_ids(autojump_clock: trio.testing.MockClock) -> None:
    async with prober_with(Recorder()) as prober:
        prober.add_http("a", 1.0, [URL])
        with pytest.raises(ProbeExistsError, match="probing: id exists: 'a'"):
            prober.add_http("a", 1.0, [URL])
        for op in (prober.remove, prober.reset, prober.status):
            with pytest.raises(ProbeNotFoundError, match="probing: id not found: 'zz'"):
                op("zz")


@pytest.mark.parametrize(
    ("endpoints", "interval", "message"),
    [
        ([], 1.0, "no endpoints given for 'x'"),
        (["not a url"], 1.0, "bad endpoint URL 'not a url'"),
        ([URL, "ftp://a/b"], 1.0, "bad endpoint URL 'ftp://a/b'"),
        (["http://"], 1.0, "bad endpoint URL 'http://'"),
        (["http://a:99999/"], 1.0, "bad endpoint URL 'http://a:99999/'"),
        ([URL], 0.0, "interval must be a positive"),
        ([URL], -1.0, "interval must be a positive"),
        ([URL], math.nan, "interval must be a positive"),
    ],
)
async def test_bad_arguments_raise_value_error_before_anything_starts(
    autojump_clock: trio.testing.MockClock, endpoints: list[str], interval: float, message: str
) -> None:
    peer = Recorder()
    async with prober_with(peer) as prober:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            prober.add_http("x", interval, endpoints)
        assert prober.ids() == []
        await trio.sleep(3.0)
        assert peer.starts == []


async def test_bad_timeout_and_string_endpoints(autojump_clock: trio.testing.MockClock) -> None:
    async with prober_with(Recorder()) as prober:
        with pytest.raises(ValueError, match="timeout must be positive"):
            prober.add_http("x", 1.0, [URL], timeout=0)
        with pytest.raises(TypeError, match="not one string"):
            prober.add_http("x", 1.0, URL)
        assert prober.ids() == []


# --- beyond the reference -----------------------------------------------------------------------


async def test_records_channel_carries_every_probe(autojump_clock: trio.testing.MockClock) -> None:
    send, receive = trio.open_memory_channel[ProbeRecord](16)
    peer = Recorder([0.02, math.inf, 0.04], remote_now=LOCAL_NOW - 0.5)
    async with prober_with(peer, records=send) as prober:
        prober.add_http("a", 1.0, [URL])
        await trio.sleep(3.5)
    send.close()
    got = [r async for r in receive]
    assert [(r.probe_id, r.success, r.timeout) for r in got] == [
        ("a", True, False),
        ("a", False, True),
        ("a", True, False),
    ]
    assert all(r.endpoint == URL for r in got)
    assert got[0].rtt == pytest.approx(0.02)
    assert got[0].srtt == pytest.approx(0.02)
    assert got[0].clock_diff == pytest.approx(0.5 - 0.01)
    assert isinstance(got[1].error, ProbeTimeout)
    assert got[1].error_text is not None
    assert "no reply within 1 s" in got[1].error_text
    assert got[1].rtt == 0.0
    assert got[1].srtt == pytest.approx(0.02)  # survives the failure
    srtt = 0.875 * 0.02 + 0.125 * 0.04
    assert got[2].srtt == pytest.approx(srtt)
    assert got[2].error is None
    assert got[2].error_text is None


async def test_max_in_flight_bounds_a_shared_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Recorder([0.1])
    async with prober_with(peer, max_in_flight=2) as prober:
        statuses = [prober.add_http(str(i), 1.0, [URL]) for i in range(5)]
        await trio.sleep(1.9)
        assert peer.max_in_flight == 2
        assert all(s.total == 1 for s in statuses)
        # Queueing for a slot is not counted in the RTT.
        assert all(s.srtt == pytest.approx(0.1) for s in statuses)


def test_status_repr_is_readable() -> None:
    status = Status("peer-1")
    status.record_success(0.002, 10.0, 9.0)
    text = repr(status)
    assert "'peer-1'" in text
    assert "srtt=2.000ms" in text
    assert "clock_diff=+999.000ms" in text


async def test_result_error_names_endpoint_and_kind_for_transport_errors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, receive = trio.open_memory_channel[ProbeRecord](4)
    async with prober_with(_connect_error, records=send) as prober:
        prober.add_http("a", 1.0, [URL])
        await trio.sleep(1.5)
    send.close()
    [record] = [r async for r in receive]
    assert not record.success
    assert not record.timeout
    assert isinstance(record.error, httpx.ConnectError)
    assert record.error_text == f"{URL}: ConnectError: connection refused"


async def test_add_after_close_is_an_error(autojump_clock: trio.testing.MockClock) -> None:
    async with prober_with(Recorder()) as prober:
        pass
    with pytest.raises(ProbingError, match="closed"):
        prober.add_http("late", 1.0, [URL])
