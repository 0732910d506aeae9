"""``http_sd``: Prometheus's HTTP service discovery, a GET returning file_sd's JSON.

As Prometheus documents it: the endpoint answers 200 with ``application/json`` target groups,
and is asked again every ``refresh_interval`` seconds. We also send ``If-None-Match`` with the
last ``ETag``, so an unchanged list costs a 304 and no parse. A non-200 answer, a body over
4 MiB, a timeout or a bad document is a failure: the last good list is kept.
"""

from __future__ import annotations

import httpx
import trio

from ._parse import CheckFn, Parsed, SourceError, load_document, parse_sd_document
from ._source import Feed, Source
from .files import MAX_TARGETS_BYTES

__all__ = ["HttpSDSource"]

# Parsing a big body blocks: above this it goes to a worker thread.
_PARSE_IN_THREAD = 64 * 1024


class HttpSDSource(Source):
    kind = "http_sd"

    def __init__(
        self,
        url: str,
        check: CheckFn | None = None,
        *,
        template: str = "{address}",
        refresh_interval: float = 30.0,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.check = check
        self.template = template
        self.refresh_interval = refresh_interval
        self.timeout = timeout
        self._etag: str | None = None
        #: Answers that were 304 Not Modified (the list was kept without a parse).
        self.not_modified = 0

    def describe(self) -> str:
        return self.url

    async def watch(
        self, feed: Feed, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            while True:
                try:
                    with trio.fail_after(self.timeout):
                        parsed = await self._fetch(client, feed)
                    if parsed is not None:
                        feed.publish(*parsed)
                except (httpx.HTTPError, SourceError, trio.TooSlowError) as exc:
                    feed.fail(_message(self.url, exc))
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED
                await trio.sleep(self.refresh_interval)

    async def _fetch(self, client: httpx.AsyncClient, feed: Feed) -> Parsed | None:
        headers = {"Accept": "application/json"}
        if self._etag is not None and feed.current is not None:
            headers["If-None-Match"] = self._etag
        async with client.stream("GET", self.url, headers=headers) as resp:
            if resp.status_code == 304 and feed.current is not None:
                self.not_modified += 1
                return None
            if resp.status_code != 200:
                raise SourceError(f"{self.url}: answered {resp.status_code}, expected 200")
            body = bytearray()
            async for chunk in resp.aiter_raw():
                body += chunk
                if len(body) > MAX_TARGETS_BYTES:
                    raise SourceError(
                        f"{self.url}: body larger than the {MAX_TARGETS_BYTES}-byte limit"
                    )
            etag = resp.headers.get("etag")
        data = bytes(body)
        if len(data) > _PARSE_IN_THREAD:
            parsed = await trio.to_thread.run_sync(self._parse, data, abandon_on_cancel=True)
        else:
            parsed = self._parse(data)
        self._etag = etag
        return parsed

    def _parse(self, data: bytes) -> Parsed:
        document = load_document(data, self.url, yaml=False)
        return parse_sd_document(document, self.url, self.check, self.template)


def _message(url: str, exc: BaseException) -> str:
    if isinstance(exc, SourceError):
        return str(exc)
    if isinstance(exc, trio.TooSlowError):
        return f"{url}: no answer in time"
    return f"{url}: {type(exc).__name__}: {exc}".rstrip(": ")
