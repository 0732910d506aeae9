"""The durable webhook: a local Hypercorn receiver is stopped for a while and restarted, and
trioprobe itself restarts in between; every fire/resolve arrives, once per key (real time)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from trioprobe._asgi import Receive, Scope, Send, answer_lifespan, send_response, serve_asgi
from trioprobe.alerting import DOWN, UP, Notice, Transition, notify
from trioprobe.config import parse_config
from trioprobe.runner import Runner

from . import scripted_probe
from .scripted_probe import fast_config


class Receiver:
    """A webhook receiver on a fixed port that can be stopped and started again."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[str] = []
        self.port = 0
        self.url = ""
        self._scope: trio.CancelScope | None = None
        self.changed = trio.Event()

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(json.loads(body))
        self.headers.append(dict(scope["headers"])[b"idempotency-key"].decode())
        self.changed.set()
        await send_response(send, 200, b"ok")

    async def start(self, nursery: trio.Nursery) -> None:
        async def serve(task_status: trio.TaskStatus[str]) -> None:
            with trio.CancelScope() as self._scope:
                await serve_asgi(self.app, "127.0.0.1", self.port, task_status=task_status)

        self.url = await nursery.start(serve)
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        assert self._scope is not None
        self._scope.cancel()

    async def wait_for(self, count: int) -> None:
        while len({b["key"] for b in self.bodies}) < count:
            self.changed = trio.Event()
            await self.changed.wait()


def _config(url: str, queue_dir: Path) -> Any:
    return parse_config(
        fast_config(
            {
                "name": "x-down",
                "webhook": f"{url}/hook",
                "webhook_queue_dir": str(queue_dir),
                "webhook_timeout": 2.0,
            },
            shutdown_grace=0.5,
        )
    )


async def test_notices_survive_a_receiver_outage_and_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "WEBHOOK_RETRY_MAX_INTERVAL", 0.2)
    receiver = Receiver()
    fired: list[Transition] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await receiver.start(nursery)
            config = _config(receiver.url, tmp_path / "queue")

            # First trioprobe process: one fire delivered, then the receiver goes away.
            first = Runner(config)
            async with trio.open_nursery() as run1:
                await run1.start(first.run)
                with first.health.subscribe() as transitions:
                    await first.health.wait_until("x", UP)
                    scripted_probe.OUTCOMES["x"] = False
                    await first.health.wait_until("x", DOWN)
                    await receiver.wait_for(1)
                    receiver.stop()
                    scripted_probe.OUTCOMES["x"] = True
                    await first.health.wait_until("x", UP)
                    scripted_probe.OUTCOMES["x"] = False
                    await first.health.wait_until("x", DOWN)
                    fired = [t for t in _drain(transitions) if t.fires or t.resolves]
                first.shutdown()  # the queue cannot drain: the receiver is down
            delivered_before_restart = len(receiver.bodies)
            assert {b["key"] for b in receiver.bodies} == {receiver.bodies[0]["key"]}

            # Second trioprobe process on the same queue; the target is fine now.
            scripted_probe.OUTCOMES["x"] = True
            second = Runner(config)
            async with trio.open_nursery() as run2:
                await run2.start(second.run)
                await second.health.wait_until("x", UP)
                await trio.sleep(0.3)  # retries fail while the receiver is down
                assert len(receiver.bodies) == delivered_before_restart
                await receiver.start(nursery)  # the receiver is back, on the same port
                # The last fire is resolved by the second run: it persisted what it fired.
                await receiver.wait_for(4)
                second.shutdown()
            receiver.stop()

    events = ["fire", "resolve", "fire", "resolve"]
    notices = [Notice("fire", fired[0]), Notice("resolve", fired[1]), Notice("fire", fired[2])]
    expected = [n.key for n in notices]
    # Delivery is at least once: the receiver was stopped right after taking the first notice,
    # before its reply, so that one may come again. The key makes a repeat detectable.
    first_seen: dict[str, dict[str, Any]] = {}
    for body, header in zip(receiver.bodies, receiver.headers, strict=True):
        assert header == body["key"]
        first_seen.setdefault(body["key"], body)
    assert list(first_seen)[:3] == expected  # each key once, none lost, in order
    assert [b["event"] for b in first_seen.values()] == events
    assert first_seen[expected[1]]["state"] == "up"
    assert all(b == first_seen[b["key"]] for b in receiver.bodies)  # repeats are identical


def _drain(channel: trio.MemoryReceiveChannel[Transition]) -> list[Transition]:
    out = []
    while True:
        try:
            out.append(channel.receive_nowait())
        except trio.WouldBlock:
            return out


async def _run_until(config: Any, *steps: tuple[bool, str]) -> None:
    """One trioprobe run: for each (outcome, state) step, script the target and wait for it."""
    runner = Runner(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        for outcome, state in steps:
            scripted_probe.OUTCOMES["x"] = outcome
            await runner.health.wait_until("x", state)  # type: ignore[arg-type]
        runner.shutdown()


async def test_a_restart_resolves_a_fire_still_queued_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 24 item 9: service down, run stopped (its fire never left the queue), service back,
    # run started: the second run must send the resolve, after the replayed fire.
    monkeypatch.setattr(notify, "WEBHOOK_RETRY_MAX_INTERVAL", 0.2)
    receiver = Receiver()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await receiver.start(nursery)
            receiver.stop()  # a port nobody answers on
            config = _config(receiver.url, tmp_path / "queue")
            await _run_until(config, (True, UP), (False, DOWN))
            await receiver.start(nursery)
            await _run_until(config, (True, UP))
            await receiver.wait_for(2)
            receiver.stop()
    assert [(b["event"], b["target"]) for b in receiver.bodies] == [
        ("fire", "x"),
        ("resolve", "x"),
    ]
    assert receiver.bodies[1]["state"] == "up"
    state = json.loads((tmp_path / "queue" / "alert-state.json").read_text())
    assert state["firing"] == []


async def test_a_restart_while_still_down_neither_refires_nor_forgets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "WEBHOOK_RETRY_MAX_INTERVAL", 0.2)
    receiver = Receiver()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await receiver.start(nursery)
            config = _config(receiver.url, tmp_path / "queue")
            await _run_until(config, (True, UP), (False, DOWN))
            await receiver.wait_for(1)
            # Still down across the restart: the fire is not sent again; then it recovers.
            await _run_until(config, (False, DOWN), (True, UP))
            await receiver.wait_for(2)
            # A third run has nothing left to resolve.
            await _run_until(config, (True, UP))
            await trio.sleep(0.3)
            receiver.stop()
    events = [b["event"] for b in {b["key"]: b for b in receiver.bodies}.values()]
    assert events == ["fire", "resolve"]


async def test_a_refused_notice_is_dropped_and_the_next_delivered(tmp_path: Path) -> None:
    """A 4xx other than 408/409/425/429 is the receiver saying "never": that notice is dropped
    (counted) after one attempt, so it cannot block the ones behind it. A 429 is "later": it is
    retried until it is taken."""
    refused = Notice("fire", Transition("p", "refused", UP, DOWN, 1.0, 3, 5, "x", alert="a"))
    busy = Notice("fire", Transition("p", "busy", UP, DOWN, 2.0, 3, 5, "x", alert="a"))
    fine = Notice("fire", Transition("p", "fine", UP, DOWN, 3.0, 3, 5, "x", alert="a"))
    attempts: list[str] = []
    delivered: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        key = json.loads(request.content)["key"]
        attempts.append(key)
        # Unread streams, as a real connection's: the notifier reads a bounded reply itself.
        if key == refused.key:
            return httpx.Response(400, stream=httpx.ByteStream(b"bad notice"))
        if key == busy.key and attempts.count(key) < 3:
            return httpx.Response(429, stream=httpx.ByteStream(b"slow down"))
        delivered.append(key)
        return httpx.Response(200, stream=httpx.ByteStream(b"ok"))

    notifier = notify.WebhookNotifier(
        "http://receiver.invalid/hook",
        str(tmp_path / "queue"),
        transport=httpx.MockTransport(answer),
        drain_timeout=30.0,
    )
    with trio.fail_after(60):  # a hang guard: the queue's files are real, so is the time
        async with trio.open_nursery() as nursery:
            await nursery.start(notifier.run)
            await notifier.enqueue([refused, busy, fine])
            notifier.close()  # run() drains what is queued, then returns
    assert attempts.count(refused.key) == 1
    assert attempts.count(busy.key) == 3
    assert delivered == [busy.key, fine.key]
    assert notifier.replayer is not None
    assert notifier.replayer.dropped_records == 1
    assert notifier.dropped == 0  # all three were queued; the drop was the receiver's verdict
