"""Durable notifiers against hostile or slow receivers (issue 24 items 2, 4b, 11b), with a raw
loopback HTTP server written here.

Real time: the handoff queue does its disk work in threads, and the mock clock's autojump would
skip over them to the queue's own timeouts. Every wait is for an event, bounded by fail_after;
the one fixed pause (the 7 s receiver) is the point of its test."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from trioprobe.alerting import DOWN, UP, Notice, Transition, WebhookNotifier
from trioprobe.alerting.queued import REPLY_LIMIT
from trioprobe.handoff import WriteReplayer

Handler = Callable[[trio.SocketStream, bytes], Awaitable[None]]


def _notice(target: str = "x") -> Notice:
    return Notice("fire", Transition("p", target, UP, DOWN, 1764513600.0, 3, 5, "boom", "a"))


async def _read_request(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += await stream.receive_some(65536)
    return body


async def _serve(handler: Handler, *, task_status: trio.TaskStatus[str]) -> None:
    async def connection(stream: trio.SocketStream) -> None:
        async with stream:
            body = await _read_request(stream)
            if body:
                await handler(stream, body)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, connection, listeners)
        task_status.started(f"http://127.0.0.1:{port}/hook")


async def _deliver(
    handler: Handler,
    tmp_path: Path,
    *,
    reply_timeout: float,
    until: Callable[[WebhookNotifier], bool],
    then: float = 0.0,
) -> WebhookNotifier:
    """Queue one notice for a receiver answering with ``handler``; run until ``until`` holds,
    and ``then`` seconds more."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(_serve, handler)
            notifier = WebhookNotifier(
                url, str(tmp_path / "q"), timeout=reply_timeout, drain_timeout=0.1
            )
            await nursery.start(notifier.run)
            await notifier.enqueue([_notice()])
            await _wait_for(lambda: until(notifier))
            await trio.sleep(then)
            notifier.close()
            nursery.cancel_scope.cancel()
    return notifier


async def _wait_for(predicate: Callable[[], bool], limit: float = 20.0) -> None:
    """Poll: replayer counters and log text have no change notification."""
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


def _replayer(notifier: WebhookNotifier) -> WriteReplayer:
    assert notifier.replayer is not None
    return notifier.replayer


async def test_webhook_timeout_above_five_seconds_applies(tmp_path: Path) -> None:
    # httpx's default read timeout (5 s) used to win: a 7 s receiver got the notice re-POSTed
    # forever. With webhook_timeout = 20 it is delivered once.
    posts: list[float] = []

    async def slow(stream: trio.SocketStream, body: bytes) -> None:
        posts.append(trio.current_time())
        await trio.sleep(7)
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
        )

    notifier = await _deliver(
        slow, tmp_path, reply_timeout=20.0, until=lambda n: _replayer(n).replayed_records > 0
    )
    assert len(posts) == 1
    assert _replayer(notifier).replay_errors == 0


async def test_a_timeout_is_logged_with_the_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def never(stream: trio.SocketStream, body: bytes) -> None:
        await trio.sleep_forever()

    await _deliver(
        never, tmp_path, reply_timeout=0.3, until=lambda n: _replayer(n).replay_errors > 0
    )
    assert "no complete reply within 0.3 s" in caplog.text


async def test_a_redirect_is_a_permanent_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    posts = 0

    async def redirect(stream: trio.SocketStream, body: bytes) -> None:
        nonlocal posts
        posts += 1
        await stream.send_all(
            b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/elsewhere\r\n"
            b"content-length: 0\r\nconnection: close\r\n\r\n"
        )

    # A retry would come 0.1 s after the failure: half a second shows there is none.
    notifier = await _deliver(
        redirect,
        tmp_path,
        reply_timeout=5.0,
        until=lambda n: _replayer(n).dropped_records + _replayer(n).replay_errors > 0,
        then=0.5,
    )
    assert posts == 1  # not retried for ever (nor followed)
    assert _replayer(notifier).dropped_records == 1
    assert "307 (a redirect to http://127.0.0.1:1/elsewhere)" in caplog.text


async def test_a_huge_reply_is_not_read(tmp_path: Path) -> None:
    # The receiver offers 256 MiB: the notifier reads REPLY_LIMIT bytes and hangs up, so the
    # receiver gets no further than what the socket buffers hold.
    total = 256 * 1024 * 1024
    sent = 0

    async def huge(stream: trio.SocketStream, body: bytes) -> None:
        nonlocal sent
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        chunk = b"x" * 65536
        try:
            while sent < total:
                await stream.send_all(chunk)
                sent += len(chunk)
        except trio.BrokenResourceError:
            pass

    done = trio.Event()

    async def huge_then_done(stream: trio.SocketStream, body: bytes) -> None:
        await huge(stream, body)
        done.set()

    await _deliver(
        huge_then_done,
        tmp_path,
        reply_timeout=5.0,
        until=lambda n: _replayer(n).replayed_records > 0 and done.is_set(),
    )
    assert REPLY_LIMIT <= sent < 32 * 1024 * 1024


async def test_a_notice_is_logged_only_once_it_is_on_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 24 item 11b: the log line reported a notice that a SIGKILL could still lose (it sat
    # in memory before the queue append). Now the append (and the alert state) come first.
    from trioprobe.alerting._notifiers import AlertNotifiers
    from trioprobe.specs import AlertSpec

    caplog.set_level(logging.INFO, "trioprobe.alerting")
    alert = AlertNotifiers(
        AlertSpec("a", webhook="http://127.0.0.1:1/hook", webhook_queue_dir=str(tmp_path / "q")),
        drain_timeout=0.1,
    )
    release = trio.Event()
    queued: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(alert.run)
        notifier = alert.durable[0]
        real_enqueue = notifier.enqueue

        async def slow_enqueue(notices: list[Notice]) -> None:
            await release.wait()
            await real_enqueue(notices)
            queued.extend(n.key for n in notices)

        notifier.enqueue = slow_enqueue  # type: ignore[method-assign]
        alert.notify(_notice())
        await trio.sleep(0.2)
        assert "fire" not in caplog.text  # not on disk yet: not reported
        release.set()
        await _wait_for(lambda: "alert 'a' fire" in caplog.text)
        assert queued == [_notice().key]
        assert (tmp_path / "q" / "alert-state.json").exists()
        alert.inbox.close()
        nursery.cancel_scope.cancel()
