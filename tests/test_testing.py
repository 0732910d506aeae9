"""trioprobe.testing and its pytest plugin: the fake target, the servers, the leak check."""

from __future__ import annotations

import importlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest
import trio
import trio.testing

from trioprobe.logping import LogClosedError
from trioprobe.testing import (
    FakeTarget,
    LeakError,
    assert_no_leaks,
    start_fake_target,
    start_health_endpoint,
    start_memory_log,
    start_zmq_echo,
)
from trioprobe.zmqnet import Client

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

# --- FakeTarget in memory, under the mock clock ------------------------------------------------


async def test_fake_target_is_healthy_until_told_otherwise(autojump_clock: Any) -> None:
    target = FakeTarget()
    async with target.client() as client:
        response = await client.post("http://anything.test/some/path", content=b"body")
    assert (response.status_code, response.text) == (200, "ok\n")
    assert (target.requests, target.ok, target.errors, target.resets) == (1, 1, 0, 0)


async def test_fake_target_fails_with_a_status_or_a_reset(autojump_clock: Any) -> None:
    target = FakeTarget()
    async with target.client() as client:
        target.fail(500)
        assert (await client.get("http://t.test/")).status_code == 500
        target.fail()
        assert (await client.get("http://t.test/")).status_code == 503
        target.fail(reset=True)
        with pytest.raises(httpx.ReadError, match="reset"):
            await client.get("http://t.test/")
        target.succeed()
        assert (await client.get("http://t.test/")).status_code == 200
    assert (target.requests, target.ok, target.errors, target.resets) == (4, 1, 2, 1)


async def test_fake_target_delay_follows_the_mock_clock(autojump_clock: Any) -> None:
    target = FakeTarget()
    target.slow(5.0)
    async with target.client() as client:
        start = trio.current_time()
        assert (await client.get("http://t.test/")).status_code == 200
        assert trio.current_time() - start == pytest.approx(5.0)
        # A client that gives up during the delay: received, never answered.
        with trio.move_on_after(1.0):
            await client.get("http://t.test/")
        target.succeed()
        start = trio.current_time()
        await client.get("http://t.test/")
        assert trio.current_time() == start
    assert (target.requests, target.ok) == (3, 2)


async def test_fake_target_flaps(autojump_clock: Any) -> None:
    target = FakeTarget()
    target.flap(every=2, status=502)
    async with target.client() as client:
        codes = [(await client.get("http://t.test/")).status_code for _ in range(6)]
    assert codes == [502, 502, 200, 200, 502, 502]
    target.flap(reset=True)
    async with target.client() as client:
        with pytest.raises(httpx.ReadError):
            await client.get("http://t.test/")
        assert (await client.get("http://t.test/")).status_code == 200
    assert (target.ok, target.errors, target.resets) == (3, 4, 1)


async def test_fake_target_wait_for_requests(autojump_clock: Any) -> None:
    target = FakeTarget()
    target.slow(10.0)
    async with trio.open_nursery() as nursery, target.client() as client:
        for _ in range(3):
            nursery.start_soon(client.get, "http://t.test/")
        with trio.fail_after(1.0):  # the requests arrive at once; the replies take 10 s
            await target.wait_for_requests(3)
        assert (target.requests, target.ok) == (3, 0)
    assert target.ok == 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.flap(0), "every must be >= 1"),
        (lambda t: t.slow(-1.0), "delay must be >= 0"),
        (lambda t: t.slow(float("nan")), "delay must be >= 0"),
        (lambda t: t.fail(42), "status must be a final HTTP status"),
        (lambda t: t.flap(status=101), "status must be a final HTTP status"),
    ],
)
def test_fake_target_rejects_bad_arguments(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(FakeTarget())


# --- FakeTarget over loopback, in real time ----------------------------------------------------


async def test_fake_target_served_on_loopback() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target = await start_fake_target(nursery)
            assert target.url is not None
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", target.url)
            async with httpx.AsyncClient() as client:
                ok = await client.get(target.url + "/x")
                head = await client.head(target.url)
                target.fail(404)
                missing = await client.get(target.url)
                target.fail(304)
                not_modified = await client.get(target.url)
                target.fail(reset=True)
                with pytest.raises(httpx.TransportError):
                    await client.get(target.url)
                target.succeed()
                again = await client.get(target.url)
            nursery.cancel_scope.cancel()
    assert (ok.status_code, ok.text) == (200, "ok\n")
    assert (head.status_code, head.content) == (200, b"")
    assert (missing.status_code, missing.reason_phrase) == (404, "Not Found")
    assert (not_modified.status_code, not_modified.content) == (304, b"")
    assert again.status_code == 200
    assert (target.requests, target.ok, target.errors, target.resets) == (6, 3, 2, 1)
    # Keep-alive: the reset cost one connection; the rest shared the other two.
    assert target.connections == 2
    assert target.bad_connections == 0


async def test_fake_target_contains_a_garbage_client() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            target = await start_fake_target(nursery)
            assert target.url is not None
            port = int(target.url.rsplit(":", 1)[1])
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"\x00\x01 not http\r\n\r\n")
                assert await stream.receive_some(100) == b""  # closed on us
            async with httpx.AsyncClient() as client:
                assert (await client.get(target.url)).status_code == 200
            nursery.cancel_scope.cancel()
    assert target.bad_connections == 1
    assert target.ok == 1


# --- the capabilities' servers ----------------------------------------------------------------


async def test_health_endpoint() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            default = await start_health_endpoint(nursery)
            pinned = await start_health_endpoint(
                nursery, path="/health", wall_clock_ns=lambda: 1_000_000_000_000_000_123
            )
            async with httpx.AsyncClient() as client:
                reply = (await client.get(default)).json()
                pinned_reply = (await client.get(pinned)).json()
            nursery.cancel_scope.cancel()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/raft/probing", default)
    assert reply["OK"] is True
    assert pinned.endswith("/health")
    assert pinned_reply == {"OK": True, "Now": "2001-09-09T01:46:40.000000123Z"}


@pytest.mark.parametrize("kind", ["router", "rep"])
async def test_zmq_echo(kind: Any) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            address = await start_zmq_echo(nursery, kind=kind)
            async with Client(address, timeout=5) as client:
                assert await client.send(b"hello") == b"hello"
                assert await client.send("again") == b"again"
            nursery.cancel_scope.cancel()
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", address)


async def test_zmq_echo_rejects_an_unknown_kind() -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(ValueError, match="kind must be 'router' or 'rep'"):
            await start_zmq_echo(nursery, kind="pub")  # type: ignore[arg-type]


async def test_memory_log_is_closed_by_cancellation(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        log = await start_memory_log(nursery, name="mine")
        assert log.name == "mine"
        assert await log.append(b"one") == 1
        nursery.cancel_scope.cancel()
    with pytest.raises(LogClosedError):
        await log.append(b"two")


# --- assert_no_leaks ----------------------------------------------------------------------------


async def test_no_leaks_passes_a_clean_block() -> None:
    with trio.fail_after(20):
        async with assert_no_leaks(settle=5.0), trio.open_nursery() as nursery:
            target = await start_fake_target(nursery)
            health = await start_health_endpoint(nursery)
            echo = await start_zmq_echo(nursery)
            async with httpx.AsyncClient() as client:
                assert target.url is not None
                await client.get(target.url)
                await client.get(health)
            async with Client(echo, timeout=5) as zmq_client:
                await zmq_client.send(b"x")
            # A worker thread that goes back to Trio's cache is no leak.
            await trio.to_thread.run_sync(lambda: None)
            nursery.cancel_scope.cancel()


async def test_no_leaks_catches_a_task_left_in_an_outer_nursery(nursery: trio.Nursery) -> None:
    async def lingering() -> None:
        await trio.sleep_forever()

    with pytest.raises(LeakError) as caught:
        async with assert_no_leaks(settle=0.05):
            nursery.start_soon(lingering)
    assert caught.value.leaks.threads == caught.value.leaks.fds == ()
    (line,) = caught.value.leaks.tasks
    assert "lingering" in line
    assert "waiting in lingering at " + __file__ in line
    assert "lingering" in str(caught.value)


async def test_no_leaks_catches_a_thread() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="left-behind", daemon=True)
    try:
        with pytest.raises(LeakError) as caught:
            async with assert_no_leaks(settle=0.05):
                thread.start()
    finally:
        stop.set()
        thread.join()
    (line,) = caught.value.leaks.threads
    assert "'left-behind'" in line
    assert caught.value.leaks.tasks == caught.value.leaks.fds == ()


def _open_file_and_listener(path: Path) -> tuple[BinaryIO, socket.socket]:
    file = open(path, "wb")  # noqa: SIM115 (the leak under test)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return file, listener


async def test_no_leaks_catches_a_file_and_a_socket(tmp_path: Path) -> None:
    with pytest.raises(LeakError) as caught:
        async with assert_no_leaks(settle=0.05):
            file, listener = _open_file_and_listener(tmp_path / "kept-open")
    expected = {
        f"fd {file.fileno()} -> {tmp_path / 'kept-open'}",
        f"fd {listener.fileno()} -> socket:",
    }
    port = listener.getsockname()[1]
    file.close()
    listener.close()
    fds = caught.value.leaks.fds
    assert len(fds) == 2
    assert {line.split("[")[0] for line in fds} == expected
    assert f"(AF_INET stream ('127.0.0.1', {port}))" in "\n".join(fds)


async def test_no_leaks_waits_for_what_ends_just_after_the_block() -> None:
    # A thread that ends a moment after the block: within `settle`, so not a leak.
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="finishing", daemon=True)
    async with assert_no_leaks(settle=5.0):
        thread.start()
        # Set from outside Trio's clock, after the block has taken its first look.
        threading.Timer(0.05, stop.set).start()
    thread.join()


async def test_no_leaks_kinds_can_be_left_out(nursery: trio.Nursery) -> None:
    async with assert_no_leaks(tasks=False, settle=0.05):
        nursery.start_soon(trio.sleep_forever)


async def test_no_leaks_lets_the_blocks_own_error_through(nursery: trio.Nursery) -> None:
    async def leak_then_fail() -> None:
        async with assert_no_leaks(settle=0.05):
            nursery.start_soon(trio.sleep_forever)
            raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        await leak_then_fail()


# --- the pytest plugin -------------------------------------------------------------------------


def _run_plugin(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run pytester's files with exactly pytest-trio and our plugin (as an installed trioprobe
    with its entry point would), whatever this environment has registered."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeini("[pytest]\ntrio_mode = true\nfilterwarnings = error\n")
    return pytester.runpytest("-p", "pytest_trio.plugin", "-p", "trioprobe.pytest_plugin")


def test_plugin_fixtures(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(
        """
        import httpx
        import trio

        from trioprobe.logping import LogClosedError
        from trioprobe.zmqnet import Client


        async def test_fake_target(trioprobe_fake_target):
            trioprobe_fake_target.fail(418)
            with trio.fail_after(10):
                async with httpx.AsyncClient() as client:
                    response = await client.get(trioprobe_fake_target.url)
            assert response.status_code == 418


        async def test_health(trioprobe_health_url):
            with trio.fail_after(10):
                async with httpx.AsyncClient() as client:
                    assert (await client.get(trioprobe_health_url)).json()["OK"] is True


        async def test_zmq(trioprobe_zmq_echo):
            with trio.fail_after(10):
                async with Client(trioprobe_zmq_echo, timeout=5) as client:
                    assert await client.send(b"ping") == b"ping"


        async def test_log(trioprobe_memory_log):
            assert await trioprobe_memory_log.append(b"x") == 1


        log = None

        async def test_log_closed_after_its_test_a(trioprobe_memory_log):
            global log
            log = trioprobe_memory_log


        async def test_log_closed_after_its_test_b():
            try:
                await log.append(b"late")
            except LogClosedError:
                return
            raise AssertionError("the fixture's log was not closed at teardown")
        """
    )
    result = _run_plugin(pytester, monkeypatch)
    result.assert_outcomes(passed=6)


def test_plugin_without_its_fixtures_changes_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        """
        def test_sync():
            assert True

        async def test_async():
            pass
        """
    )
    result = _run_plugin(pytester, monkeypatch)
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*warning*")


def test_doc_example_runs(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    page = (ROOT / "docs" / "testing.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    (example,) = [block for block in blocks if "autojump_clock" in block]
    pytester.makepyfile(test_doc_example=example)
    result = _run_plugin(pytester, monkeypatch)
    result.assert_outcomes(passed=1)


def test_plugin_load_imports_nothing_more() -> None:
    # Loading the plugin must not pull in the servers (or their dependencies), nor anything of
    # trioprobe's: the top-level package imports lazily, so only it and the plugin are new.
    code = (
        "import sys, json, pytest; before = set(sys.modules); "
        "import trioprobe.pytest_plugin; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == ["trioprobe", "trioprobe.pytest_plugin"]


def test_plugin_is_registered_through_pytest11() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"trioprobe": "trioprobe.pytest_plugin"}
    plugin = importlib.import_module("trioprobe.pytest_plugin")
    names = [name for name in vars(plugin) if name.startswith("trioprobe_")]
    assert sorted(names) == sorted(plugin.__all__)
    assert len(names) == 5
