"""A loopback server that cuts a request off mid-body, to check nothing is left half-iterated.

httpcore iterates a request body without closing it, so a body whose send fails (reset) or is
cancelled (a deadline) must not be an async generator: see ``trioprobe._httpx_body``. A real
TCP server that stops reading makes the send block deterministically; tests run it under
Trio's MockClock.
"""

from __future__ import annotations

import functools
import gc
import socket
import struct
import warnings
from collections.abc import Awaitable, Callable

import trio
import trio.lowlevel

# Far more than loopback's socket buffers hold, so the body's send blocks half-way.
BIG = 32_000_000


class CuttingServer:
    """Reads a little of each request, then stalls (``reset=False``) or resets the connection."""

    def __init__(self, *, reset: bool) -> None:
        self.reset = reset
        self.received = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.received += len(await stream.receive_some(65536))
        if not self.reset:
            await trio.sleep_forever()
        # SO_LINGER 0: close with a RST, as a killed etcd's kernel does.
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()


async def leaves_no_generator(
    server: CuttingServer, call: Callable[[str], Awaitable[object]]
) -> list[warnings.WarningMessage]:
    """Run ``call(url)`` against ``server`` and collect; the warnings raised meanwhile."""
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await call(url)
            gc.collect()
            await trio.lowlevel.checkpoint()  # Trio finalizes a collected generator in a task
        nursery.cancel_scope.cancel()
    assert server.received > 0  # the request was under way: headers and part of the body
    return [w for w in caught if issubclass(w.category, ResourceWarning)]
