"""Log in, then fetch the account page: one check, run as a monitor and as a test.

As a monitor (``examples/checks/checks.toml``)::

    trioprobe run examples/checks/checks.toml

As a test, the same file (``trioprobe_run_check`` is trioprobe's pytest fixture)::

    APP_URL=http://127.0.0.1:8081 pytest examples/checks/login_check.py

The password comes from ``$CHECK_PASSWORD`` (default ``wonderland``, the example app's).
"""

from __future__ import annotations

import os

from trioprobe.checks import CheckContext


async def check(ctx: CheckContext, target: str) -> None:
    password = os.environ.get("CHECK_PASSWORD", "wonderland")
    async with ctx.step("login"):
        reply = await ctx.http.post(f"{target}/login", data={"user": "alice", "password": password})
        assert reply.status_code == 200, f"login answered {reply.status_code}: {reply.text[:60]}"
    async with ctx.step("fetch"):
        reply = await ctx.http.get(f"{target}/account")
        reply.raise_for_status()
        assert "Welcome, alice" in reply.text, f"unexpected page: {reply.text[:60]!r}"
    ctx.metric("account_page_bytes", len(reply.content))


async def test_login_then_fetch(trioprobe_run_check) -> None:  # type: ignore[no-untyped-def]
    await trioprobe_run_check(check, os.environ.get("APP_URL", "http://127.0.0.1:8081"))
