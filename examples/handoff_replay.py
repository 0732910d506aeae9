"""Hinted handoff on its own: queue writes durably, replay them to a flaky receiver.

    .venv/bin/python examples/handoff_replay.py

The receiver is "down" for its first few calls; every record still arrives, in order, once it
is back. Then the queue is reopened to show that nothing is left and the head survived.
"""

from __future__ import annotations

import tempfile

import trio

from trioprobe.handoff import WriteReplayer, open_queue


async def main() -> None:
    received: list[bytes] = []
    failures = 5

    async def send(data: bytes) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("receiver is down")
        received.append(data)

    with tempfile.TemporaryDirectory() as tmp:
        directory = f"{tmp}/handoff"
        async with open_queue(directory, max_segment_size=1024) as queue:
            replayer = WriteReplayer(queue, send, retry_interval=0.01, retry_max_interval=0.2)
            async with trio.open_nursery() as nursery:
                await nursery.start(replayer.run)
                for i in range(20):
                    # Durable on disk when write() returns, whether or not the receiver is up.
                    await replayer.write(f"point {i}".encode())
                with trio.fail_after(10):
                    await replayer.wait_drained()
                nursery.cancel_scope.cancel()
            print("delivered in order:", received == [f"point {i}".encode() for i in range(20)])
            print("stats:", replayer.stats())

        async with open_queue(directory) as queue:
            print("after reopening:", queue.position(), "- head record:", await queue.current())
            print("recovery:", "clean" if queue.recovery.clean else queue.recovery)


if __name__ == "__main__":
    trio.run(main)
