"""The ``lines`` surfacer: one line per exported ``EventMetrics`` on stdout or in a file.

``format = "text"`` is cloudprober's file surfacer line, ``<prefix> <id> <metrics text form>``,
where the id starts at the Unix time in nanoseconds and grows by one per line (so lines from one
run sort and deduplicate). ``format = "json"`` writes JSON lines that keep everything, the kind
included; :meth:`EventMetrics.from_json` reads them back.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Literal, TextIO

import attrs
import trio

from .._options import path_field
from ..metrics import EventMetrics

__all__ = ["LinesSurfacer", "Options", "make_surfacer"]


@attrs.frozen
class Options:
    """Config keys of a ``lines`` surfacer."""

    #: A file to append to (relative to the config file), or ``-`` for standard output.
    path: str = path_field("-")
    format: Literal["text", "json"] = "text"
    #: The first word of each text line.
    prefix: str = "trioprobe"


class LinesSurfacer:
    """Writes each batch of metrics it receives with one write and one flush."""

    def __init__(self, options: Options, stream: TextIO | None = None) -> None:
        self.options = options
        self.name = f"lines:{options.path}"
        self._stream = stream
        self._next_id = time.time_ns()

    def format(self, em: EventMetrics) -> str:
        if self.options.format == "json":
            return json.dumps(em.to_json(), separators=(",", ":"))
        line = f"{self.options.prefix} {self._next_id} {em}"
        self._next_id += 1
        return line

    async def run(
        self,
        metrics: trio.MemoryReceiveChannel[EventMetrics],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        stream = self._stream
        owned = False
        if stream is None:
            if self.options.path == "-":
                stream = sys.stdout
            else:
                stream = await trio.to_thread.run_sync(
                    lambda: open(self.options.path, "a", encoding="utf-8")  # noqa: SIM115
                )
                owned = True
        try:
            async with metrics:
                task_status.started()
                async for em in metrics:
                    lines = [self.format(em)]
                    while True:
                        try:
                            lines.append(self.format(metrics.receive_nowait()))
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    text = "\n".join(lines) + "\n"
                    await trio.to_thread.run_sync(_write_and_flush, stream, text)
        finally:
            if owned:
                stream.close()


def _write_and_flush(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()


def make_surfacer(options: Options) -> LinesSurfacer:
    return LinesSurfacer(options)
