"""The h11 server (``trioprobe._asgi``) against hostile clients: framing, idle floods, slots."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
from collections.abc import Iterator
from functools import partial

import pytest
import trio
import trio.testing

from trioprobe._asgi import HTTPServerStats, serve_asgi
from trioprobe.probing import health_app

from .test_health import port_of, raw_exchange

# A request framed both ways: chunked, h11 sees an empty body and then a second request; framed
# by its length (as a proxy might), the "second request" is the body of the first (issue 24 #12).
SMUGGLED = (
    b"POST /raft/probing HTTP/1.1\r\nHost: x\r\nContent-Length: 45\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
)


async def test_content_length_with_transfer_encoding_is_refused_and_closed(
    nursery: trio.Nursery,
) -> None:
    stats = HTTPServerStats()
    url = await nursery.start(partial(serve_asgi, health_app, stats=stats))
    with trio.fail_after(10):  # hang guard only
        reply = await raw_exchange(port_of(url), SMUGGLED)
    assert reply.startswith(b"HTTP/1.1 400"), reply
    # One answer only: the hidden request was never served.
    assert reply.count(b"HTTP/1.1 ") == 1, reply
    assert b"Content-Length and Transfer-Encoding" in reply
    assert stats.bad_requests == 1
    assert stats.requests == 0
    nursery.cancel_scope.cancel()


async def test_http_1_0_without_host_and_obs_fold_are_accepted(nursery: trio.Nursery) -> None:
    # Both documented in docs/probing.md, "Hostile clients": harmless to these apps.
    url = await nursery.start(serve_asgi, health_app)
    with trio.fail_after(10):
        reply = await raw_exchange(port_of(url), b"GET /raft/probing HTTP/1.0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200"), reply
        folded = (
            b"GET /raft/probing HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n"
            b"Connection: close\r\n\r\n"
        )
        reply = await raw_exchange(port_of(url), folded)
        assert reply.startswith(b"HTTP/1.1 200"), reply
    nursery.cancel_scope.cancel()


GOOD = b"GET /raft/probing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
KEEP_ALIVE = b"GET /raft/probing HTTP/1.1\r\nHost: x\r\n\r\n"


async def _idle_client(port: int, budget: list[int], stop: trio.Event) -> None:
    """Connect, send nothing, and re-connect as soon as the server closes: issue 24 #6."""
    while budget[0] > 0 and not stop.is_set():
        budget[0] -= 1
        with trio.move_on_after(30):  # hang guard: the server closes idle ones after 10 s
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                try:
                    while await stream.receive_some(4096):
                        pass
                except trio.BrokenResourceError:
                    pass
        # Pacing only (re-connecting at once works too, at more CPU on a shared machine).
        await trio.sleep(0.05)


async def _keep_alive_scrape(stream: trio.SocketStream) -> bool:
    reply = b""
    try:
        await stream.send_all(KEEP_ALIVE)
        with trio.move_on_after(5):
            while b"}\n" not in reply:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                reply += chunk
    except trio.BrokenResourceError:
        return False
    return reply.startswith(b"HTTP/1.1 200") and b"}\n" in reply


async def test_idle_connections_are_shed_so_scrapes_keep_being_served(
    nursery: trio.Nursery,
) -> None:
    slots = 8
    stats = HTTPServerStats()
    url = await nursery.start(partial(serve_asgi, health_app, stats=stats, max_connections=slots))
    port = port_of(url)
    budget = [10_000]  # connections the idle clients may open in all
    stop = trio.Event()
    fresh_ok = kept_ok = 0
    scrapes = 30
    with trio.fail_after(120):  # hang guard only: the verdict is by counts
        async with trio.open_nursery() as attack:
            for _ in range(2 * slots):
                attack.start_soon(_idle_client, port, budget, stop)
            # Every slot is taken by idle connections before the scraper comes.
            await trio.testing.wait_all_tasks_blocked()
            assert stats.connections >= slots, stats
            scraper = await trio.open_tcp_stream("127.0.0.1", port)
            try:
                for _ in range(scrapes):
                    if await _keep_alive_scrape(scraper):
                        kept_ok += 1
                    else:  # as Prometheus does: a new connection for the next scrape
                        await scraper.aclose()
                        scraper = await trio.open_tcp_stream("127.0.0.1", port)
                    # A scraper on a fresh connection each time (a restarted Prometheus).
                    reply = await raw_exchange(port, GOOD)
                    fresh_ok += reply.startswith(b"HTTP/1.1 200")
                    await trio.sleep(0.01)
            finally:
                await scraper.aclose()
            shed_during = stats.shed
            stop.set()
            attack.cancel_scope.cancel()
    assert budget[0] > 0, "the idle clients ran out of connections before the scrapes ended"
    assert (fresh_ok, kept_ok) == (scrapes, scrapes), stats
    assert shed_during >= scrapes, stats  # the slots really were full of idle connections
    nursery.cancel_scope.cancel()


@contextlib.contextmanager
def _out_of_descriptors(spare: int) -> Iterator[None]:
    """Use up every file descriptor the process may open, ``spare`` aside (issue 24 #7)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    filler: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 64, hard))
    try:
        for _ in range(128):  # bounded: the limit is 64 above what is open
            try:
                filler.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                if exc.errno != errno.EMFILE:
                    raise
                break
        else:
            raise AssertionError("the descriptor limit did not bite")
        for _ in range(spare):
            os.close(filler.pop())
        yield
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _request_on(sock: trio.socket.SocketType, port: int) -> bytes:
    stream = trio.SocketStream(sock)
    async with stream:
        await sock.connect(("127.0.0.1", port))
        await stream.send_all(GOOD)
        reply = b""
        with trio.move_on_after(10):  # hang guard: the verdict is the reply
            while chunk := await stream.receive_some(65536):
                reply += chunk
        return reply


async def test_out_of_descriptors_the_server_still_answers_from_its_reserve(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    stats = HTTPServerStats()
    url = await nursery.start(partial(serve_asgi, health_app, stats=stats))
    scrapes = 3
    # The scraper's sockets are made first: with no descriptor left it could not make them.
    sockets = [trio.socket.socket() for _ in range(scrapes)]
    with caplog.at_level(logging.WARNING, logger="trioprobe.http"), _out_of_descriptors(0):
        replies = [await _request_on(sock, port_of(url)) for sock in sockets]
    assert [r.split(b"\r\n", 1)[0] for r in replies] == [b"HTTP/1.1 200 "] * scrapes, replies
    assert stats.accepted_from_reserve == scrapes
    assert stats.accept_errors == scrapes
    # One line for all of them, without a traceback (trio's own loop logged one per 0.1 s).
    lines = [r for r in caplog.records if "cannot accept" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].exc_info is None
    nursery.cancel_scope.cancel()
