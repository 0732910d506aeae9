"""Logs the pinger can append to and tail: the protocol, its errors, and three implementations.

A log is a sequence of ``Entry(index, data)`` with strictly increasing indexes. ``append`` returns
the index the entry got; ``async with log.read(start) as entries`` gives a receive channel of every
entry with an index >= ``start``, following the tail forever, until it fails (the failure is raised
by the ``async with``; a normal end of the channel means the log ended without one):

- ``LogTruncatedError``: entries at or after ``start`` were discarded (compaction), so the reader
  cannot deliver what it was asked for. The pinger restarts from a fresh replay position.
- ``LogClosedError``: the log was closed; the pinger stops.
- ``LogUnavailableError``: the server went away; the pinger restarts.

A log raises ``LogError`` (or ``OSError`` for a file it cannot use) for a failure of the log; any
other exception from a log is a bug, and the pinger lets it end its run (docs/errors.md).

The channel is fed by a task inside that block, so leaving it, early or by an error, stops the
reader and releases its connection or file at once: there is no generator to ``aclose``.

Indexes may have gaps (an etcd revision counts writes to the whole key space), but never go back.
``disconnect()`` is optional: a log that has a server connection drops it and reconnects by itself
(the reference's ``Disconnector``), so a pinger can spread its measurements over servers.

The package, one module per concern: :mod:`.protocol` (the protocol, its errors and
``read_with``), :mod:`.memory` (``MemoryLog``), :mod:`.frames` (the file format's one codec),
:mod:`.file` (``FileLog``) and :mod:`.tail` (its tail reader), :mod:`.etcd` (``EtcdLog`` and its
watch stream) and :mod:`.spec` (``open_log``). Every name is importable from here as it was when
this was one module.
"""

from .etcd import EtcdLog
from .etcd import prefix_end as prefix_end
from .file import FileLog
from .memory import MemoryLog
from .protocol import (
    Disconnector,
    Entry,
    Log,
    LogAppender,
    LogClosedError,
    LogError,
    LogReader,
    LogTruncatedError,
    LogUnavailableError,
    read_with,
)
from .protocol import (
    EntrySink as EntrySink,
)
from .spec import LogClients, check_log_spec, open_log

__all__ = [
    "Entry",
    "LogError",
    "LogTruncatedError",
    "LogClosedError",
    "LogUnavailableError",
    "LogAppender",
    "LogReader",
    "Log",
    "Disconnector",
    "MemoryLog",
    "FileLog",
    "EtcdLog",
    "LogClients",
    "check_log_spec",
    "open_log",
    "read_with",
]
