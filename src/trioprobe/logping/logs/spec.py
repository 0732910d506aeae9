"""Opening a log from a spec string: ``"memory"``, ``"file:PATH"`` or ``"etcd:URL"``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs

from .etcd import EtcdLog
from .file import FileLog
from .memory import MemoryLog
from .protocol import LogAppender, LogReader

__all__ = ["LogClients", "check_log_spec", "open_log"]


@attrs.frozen
class LogClients:
    """What a pinger needs for one log: an appender, a separate reader, and where to start."""

    name: str
    appender: LogAppender
    reader: LogReader
    next_index: Callable[[], Awaitable[int]]


def check_log_spec(spec: str) -> str:
    """Validate ``"memory"``, ``"file:PATH"`` or ``"etcd:URL"``; return it, or raise ValueError."""
    if spec == "memory":
        return spec
    kind, sep, rest = spec.partition(":")
    if sep and kind == "file" and rest:
        return spec
    if sep and kind == "etcd" and rest.startswith(("http://", "https://")):
        return spec
    raise ValueError(f'log {spec!r} is not one of "memory", "file:PATH" or "etcd:http://HOST:PORT"')


@asynccontextmanager
async def open_log(
    spec: str, *, prefix: str = "trioprobe/logping/", fsync: bool = True
) -> AsyncIterator[LogClients]:
    """Open the log named by ``spec`` (see ``check_log_spec``) with separate append and read
    clients, as the reference does, so the read path is measured on its own connection.

    The log's ``name`` is ``spec`` itself, so a probe's target and the log's name agree.
    """
    check_log_spec(spec)
    if spec == "memory":
        memory = MemoryLog(name=spec)
        yield LogClients(spec, memory, memory, memory.next_index)
        return
    kind, _, rest = spec.partition(":")
    if kind == "file":
        writer = FileLog(rest, name=spec, fsync=fsync)
        reader = FileLog(rest, name=spec)
        try:
            yield LogClients(spec, writer, reader, writer.next_index)
        finally:
            writer.close()
            reader.close()
        return
    async with (
        EtcdLog(rest, prefix, name=spec) as etcd_writer,
        EtcdLog(rest, prefix, name=spec) as etcd_reader,
    ):
        yield LogClients(spec, etcd_writer, etcd_reader, etcd_writer.next_index)
