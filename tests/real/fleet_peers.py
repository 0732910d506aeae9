"""Helpers of the real fleet tests: a logging target server and `trioprobe run` agent processes.

The target server answers ``GET /t/<n>`` on one loopback port (HTTP/1.1, keep-alive) and logs
who asked: each agent's config sends an ``X-Agent`` header naming it, so the log says which agent
probed which target when, which is what coverage and takeover are measured from.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any


class TargetServer:
    """An asyncio HTTP server in a thread; ``log`` holds (monotonic time, agent, path)."""

    def __init__(self) -> None:
        self.log: list[tuple[float, str, str]] = []
        # The times of ``log`` alone, for bisecting a window: the test polls windows often, and
        # scanning the whole log each time would hold the GIL from the server's thread.
        self._times: list[float] = []
        #: (agent, path) pairs answered with 500: a target failing for one vantage point.
        self.fail_for: set[tuple[str, str]] = set()
        #: Webhook notices POSTed to ``/hook``: (Idempotency-Key, the JSON document).
        self.hooks: list[tuple[str, dict[str, Any]]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> TargetServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the target server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.port}/t/{n}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.sleep(0.1)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (ln.partition(":") for ln in lines[1:] if ln)
                }
                agent = headers.get("x-agent", "")
                if path == "/hook":
                    body = await reader.readexactly(int(headers.get("content-length", "0")))
                    self.hooks.append((headers.get("idempotency-key", ""), json.loads(body)))
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                now = time.monotonic()
                self.log.append((now, agent, path))
                self._times.append(now)
                failing = (agent, path) in self.fail_for
                status = b"500 Internal Server Error" if failing else b"200 OK"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def probers(self, since: float, until: float | None = None) -> dict[str, set[str]]:
        """path -> the agents that probed it in [since, until)."""
        end = until if until is not None else float("inf")
        count = len(self._times)
        first = bisect.bisect_left(self._times, since, 0, count)
        out: dict[str, set[str]] = defaultdict(set)
        for t, agent, path in self.log[first:count]:
            if t >= end:
                break
            out[path].add(agent)
        return out

    def since(self, start: float) -> list[tuple[float, str, str]]:
        count = len(self._times)
        return self.log[bisect.bisect_left(self._times, start, 0, count) : count]


AGENT_CONFIG = """
[fleet]
etcd = ["{etcd}"]
name = "{fleet}"
agent = "{agent}"
replicas = {replicas}
lease_ttl = {ttl}

[[probe]]
name = "web"
type = "http"
targets_file = "targets.txt"
interval = {interval}
timeout = {timeout}
headers = {{ "X-Agent" = "{agent}" }}
{extra}
"""


class Agent:
    """One ``trioprobe run`` process, its output in ``<dir>/<name>.log``."""

    def __init__(self, workdir: Path, name: str, **fields: object) -> None:
        self.name = name
        self.config = workdir / f"{name}.toml"
        self.config.write_text(AGENT_CONFIG.format(agent=name, **fields))
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "trioprobe.cli", "run", str(self.config), "--quiet"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.config.parent,
            )

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")
