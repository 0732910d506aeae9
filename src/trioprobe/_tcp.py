"""``trio.open_tcp_stream`` without the reference cycles its failures leave behind.

When every attempt fails, trio raises one ``OSError`` whose ``__cause__`` groups each attempt's
error. Each of those errors holds its traceback, whose frame (trio's ``attempt_connect``) holds its
function, whose closure holds the list of errors: a cycle per attempt, which only a full pass of
the garbage collector frees. A target that refuses connections made one every probe; with the
collector's survivors frozen (:mod:`trioprobe._gc`) they would pile up until the next reclaim.
Dropping those inner errors' tracebacks breaks the cycles; what a probe reports (the errors and
their messages, the outer error's own traceback) stays.
"""

from __future__ import annotations

import trio

__all__ = ["break_connect_cycles", "open_tcp_stream"]


async def open_tcp_stream(host: str, port: int) -> trio.SocketStream:
    """``trio.open_tcp_stream(host, port)``; its ``OSError`` comes without reference cycles."""
    try:
        return await trio.open_tcp_stream(host, port)
    except OSError as exc:
        break_connect_cycles(exc)
        raise


def break_connect_cycles(exc: BaseException) -> None:
    """Drop the tracebacks of trio's connection attempts found in ``exc``'s chain (its causes and
    contexts, as httpx wraps trio's error)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BaseExceptionGroup):
            for attempt in current.exceptions:
                if _is_attempt(attempt):
                    attempt.__traceback__ = None
            todo.extend(current.exceptions)
        todo.extend((current.__cause__, current.__context__))


def _is_attempt(exc: BaseException) -> bool:
    # Only trio's attempts: another group's tracebacks may be what someone is there to read.
    tb = exc.__traceback__
    if tb is None:
        return False
    code = tb.tb_frame.f_code
    return code.co_name == "attempt_connect" and code.co_filename.endswith(_TRIO_CONNECT_FILE)


_TRIO_CONNECT_FILE = "_highlevel_open_tcp_stream.py"
