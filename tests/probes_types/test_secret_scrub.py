"""Issue 24 item 11: no configured secret, nor a fragment of one, in any message.

A loopback target echoes the request (its headers, Authorization included) in its body and in a
response header; the probe's validators fail and quote what came back. The quote is cut at
40-60 characters, so before the fix part of the token survived whole-secret redaction.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from functools import partial
from pathlib import Path

import pytest
import trio

from trioprobe import _scrub
from trioprobe._scrub import MIN_FRAGMENT, register_secret, scrub, secret_forms
from trioprobe.probes.http_probe import HTTPProbe, Options
from trioprobe.results import ProbeResult

GUARD = 30


def _fragments(secret: str) -> set[str]:
    return {secret[i : i + MIN_FRAGMENT] for i in range(len(secret) - MIN_FRAGMENT + 1)}


def _assert_clean(text: str, *forms: str) -> None:
    for form in forms:
        leaked = [f for f in _fragments(form) if f in text]
        assert not leaked, (text, leaked)


def test_a_cut_prefix_and_a_fragment_are_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    # A registry of its own: secrets other tests registered must not decide this one.
    monkeypatch.setattr(_scrub, "_secrets", set())
    monkeypatch.setattr(_scrub, "_grams", frozenset())
    monkeypatch.setattr(_scrub, "_short", ())
    token = secrets.token_urlsafe(62)  # 83 characters, as in the issue
    register_secret(secret_forms(token))
    for text in (
        f'body did not match: {{"auth": "Bearer {token[:49]}...',
        f"x{token[10:30]}y",
        f"json: {base64.b64encode(token.encode()).decode()[:50]}",
    ):
        clean = scrub(text)
        assert "<secret>" in clean
        _assert_clean(clean, token, base64.b64encode(token.encode()).decode())
    assert scrub("nothing secret here") == "nothing secret here"


def test_log_records_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    token = secrets.token_hex(40)
    register_secret(secret_forms(token))
    logging.getLogger("anything.at.all").warning("peer said %s", token[:45])
    (record,) = caplog.records
    assert "<secret>" in record.getMessage()
    _assert_clean(caplog.text, token)


async def _echo(stream: trio.SocketStream) -> None:
    """Answer each request with its header block as a JSON string body and as a header."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        head = data.split(b"\r\n\r\n")[0].decode("latin-1")
        auth = next(
            (
                line.split(":", 1)[1].strip()
                for line in head.split("\r\n")
                if line.lower().startswith("authorization:")
            ),
            "",
        )
        body = json.dumps({"echo": head}).encode()
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nX-Echo: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (auth.encode(), len(body), body)
        )
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()


@pytest.mark.parametrize("transport", ["auto", "httpx"])
@pytest.mark.parametrize("auth", ["bearer", "basic"])
async def test_validator_quotes_never_show_the_secret(
    nursery: trio.Nursery,
    tmp_path: Path,
    transport: str,
    auth: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    listeners = await nursery.start(partial(trio.serve_tcp, _echo, 0, host="127.0.0.1"))
    url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
    secret = secrets.token_urlsafe(62)
    (tmp_path / "secret").write_text(secret + "\n")
    keys: dict[str, str] = (
        {"bearer_token_file": str(tmp_path / "secret")}
        if auth == "bearer"
        else {
            "basic_auth_username": "operator",
            "basic_auth_password_file": str(tmp_path / "secret"),
        }
    )
    forms = [secret, base64.b64encode(f"operator:{secret}".encode()).decode()]
    probe = HTTPProbe(
        Options(
            transport=transport,
            json_paths={"echo": "something else"},
            header_checks={"X-Echo": "^nothing$"},
            **keys,
        ),
        list,
        interval=1.0,
        timeout=20.0,
    )
    try:
        with trio.fail_after(GUARD):
            result = await probe.probe_once(url)
    finally:
        await probe._clients.aclose()
    assert not result.success
    assert result.error is not None
    assert "<secret>" in result.error  # the quotes did reach the secret: it was cut out
    _assert_clean(result.error, *forms)
    # Anything built from the result later (status pages, notices, logs) starts from this.
    logging.getLogger("trioprobe.test").warning("probe failed: %s", result.error)
    _assert_clean(caplog.text, *forms)


def test_every_result_error_is_scrubbed() -> None:
    token = secrets.token_hex(30)
    register_secret(secret_forms(token))
    result = ProbeResult("t", False, error=f"quoted {token[5:40]}")
    assert result.error is not None
    _assert_clean(result.error, token)


def test_scrubbing_twice_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_scrub, "_secrets", set())
    monkeypatch.setattr(_scrub, "_grams", frozenset())
    monkeypatch.setattr(_scrub, "_short", ())
    register_secret(secret_forms("my-secret-token-1234"))
    once = scrub("got my-secret-token-1234 and secret-tok")
    assert once == "got <secret> and <secret>"
    assert scrub(once) == once
