"""The status page in a real headless browser (Debian's ``chromium``): every target's row with
its state, a hostile target name shown as text (its script never runs), and a screenshot."""

from __future__ import annotations

import html.parser
from pathlib import Path

import pytest
import trio

from trioprobe._asgi import serve_asgi
from trioprobe.alerting import DOWN, UP
from trioprobe.cli._demo import demo_app
from trioprobe.config import parse_config
from trioprobe.runner import Runner

from .services import require_binary

pytestmark = pytest.mark.real

HOSTILE_PATH = "<script>document.title='pwned'</script>"


class _Dom(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, str] = {}
        self.title = ""
        self.scripts = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and "data-target" in a:
            self.rows[a["data-target"] or ""] = a["data-state"] or ""
        self.scripts += tag == "script"
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


async def _chromium(binary: str, profile: Path, *args: str) -> bytes:
    done = await trio.run_process(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            *args,
        ],
        stdin=b"",
        capture_stdout=True,
        capture_stderr=True,
    )
    return done.stdout


async def test_status_page_in_chromium(tmp_path: Path) -> None:
    chromium = require_binary("chromium", "chromium")
    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            good = await nursery.start(serve_asgi, demo_app)
            targets = [
                f"{good}/",
                f"{good}/slow",
                "http://127.0.0.1:9/",
                f"http://127.0.0.1:9/{HOSTILE_PATH}",
            ]
            config = parse_config(
                {
                    "probe": [
                        {
                            "name": "web",
                            "type": "http",
                            "targets": targets,
                            "interval": 0.1,
                            "timeout": 1.0,
                            "stats_interval": 1.0,
                        }
                    ],
                    "alert": [{"name": "web-down", "probes": ["web"], "log": False}],
                    "status": {"port": 0},
                }
            )
            runner = Runner(config)
            async with trio.open_nursery() as run_nursery:
                await run_nursery.start(runner.run)
                for target in targets[:2]:
                    await runner.health.wait_until(target, UP)
                for target in targets[2:]:
                    await runner.health.wait_until(target, DOWN)
                url = runner.alerting.status_url
                assert url is not None
                dom_text = (await _chromium(chromium, tmp_path / "p1", "--dump-dom", url)).decode()
                shot = tmp_path / "status.png"
                await _chromium(
                    chromium, tmp_path / "p2", f"--screenshot={shot}", "--window-size=1400,600", url
                )
                runner.shutdown()
            nursery.cancel_scope.cancel()  # the target server
    dom = _Dom()
    dom.feed(dom_text)
    assert dom.rows == {targets[0]: "up", targets[1]: "up", targets[2]: "down", targets[3]: "down"}
    # The hostile name was text: its script did not run (the title is ours) and is no element.
    assert dom.title.startswith("trioprobe status: 2 down"), dom.title
    assert dom.scripts == 0
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom_text
    assert "FIRING: web-down" in dom_text
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")
