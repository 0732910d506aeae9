"""Embed trioprobe.zmqnet in a Trio program: a ROUTER server, a Lazy Pirate client, a benchmark.

Run: .venv/bin/python examples/zmqnet_echo.py   (exits by itself after about two seconds)
"""

from __future__ import annotations

import trio

from trioprobe.zmqnet import Client, MessageDroppedError, RemoteError, RouterServer, benchmark


async def shout(request: bytes) -> bytes:
    """The handler: any async function bytes -> bytes. Raising answers an error frame."""
    if not request:
        raise ValueError("empty request")
    await trio.sleep(0.001)  # a real handler awaits I/O here; other workers keep serving
    return request.upper()


async def main() -> None:
    server = RouterServer("tcp://127.0.0.1:0", shout, workers=4, name="example")
    async with trio.open_nursery() as nursery:
        # nursery.start returns once the socket is bound, with the address actually bound.
        addr = await nursery.start(server.run)
        print(f"server listening on {addr}")

        async with Client(addr, identity="example-client", timeout=1.0, retries=3) as client:
            for word in ("hello", "trio", "zeromq"):
                print(f"{word!r} -> {await client.send(word)!r}")
            try:
                await client.send(b"")
            except RemoteError as exc:
                print(f"error frame, as expected: {exc}")

        result = await benchmark(addr, duration=1.0, clients=4, timeout=1.0)
        lat = result.latency()
        print(
            f"benchmark: {result.messages} replies, {result.drops} drops, "
            f"{result.throughput:,.0f} msg/s, p50 {lat['p50'] / 1000:.0f} us, "
            f"p99 {lat['p99'] / 1000:.0f} us"
        )
        nursery.cancel_scope.cancel()  # cancelling is the shutdown

    print(f"server metrics: {server.metrics.summary()}")

    # Nothing listens here any more: the client gives up after its attempts.
    async with Client(addr, timeout=0.2, retries=2) as client:
        try:
            await client.send("anyone?")
        except MessageDroppedError as exc:
            print(f"dropped, as expected: {exc}")


if __name__ == "__main__":
    trio.run(main)
