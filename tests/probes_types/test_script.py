"""The ``script`` probe type and checks as code, against the example app in examples/checks/.

The app runs as its own process (it is a stand-in for any web app); the check file beside it is
run three ways: by the probe type, by :func:`trioprobe.checks.run_check`, and by pytest through
the ``trioprobe_run_check`` fixture, in a pytest subprocess, passing and failing.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from trioprobe.checks import CheckContext, CheckLoadError, load_check
from trioprobe.config import ConfigError, load_config
from trioprobe.metrics import Map
from trioprobe.probes.script import Options, ScriptProbe, make_probe
from trioprobe.runner import Runner
from trioprobe.specs import ProbeSpec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "checks"


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "app.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stdout.close()


def script_probe(check_file: Path, timeout: float = 5.0, **options: object) -> ScriptProbe:
    spec = ProbeSpec(name="login", type="script", timeout=timeout)
    probe = make_probe(spec, Options(module=str(check_file), **options), lambda: ())  # type: ignore[arg-type]
    probe._verify = probe._ssl_context()
    return probe


async def test_the_example_check_logs_in_and_fetches(app_url: str) -> None:
    result = await script_probe(EXAMPLE / "login_check.py").probe_once(app_url)
    assert result.success, result.error
    steps = result.gauges["step_duration"]
    assert isinstance(steps, Map)
    assert set(steps.values) == {"login", "fetch"}
    assert result.gauges["check_account_page_bytes"] == len(b"Welcome, alice\n")
    assert result.extras["errors"].values == dict.fromkeys(result.extras["errors"].values, 0)  # type: ignore[union-attr]


async def test_a_wrong_password_fails_in_the_login_step_as_validation(
    app_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECK_PASSWORD", "not-it")
    result = await script_probe(EXAMPLE / "login_check.py").probe_once(app_url)
    assert not result.success
    assert result.error is not None
    assert result.error.startswith("step 'login': AssertionError: login answered 401"), result.error
    assert result.extras["errors"].values["validation"] == 1  # type: ignore[union-attr]
    assert result.extras["step_failures"].values == {"login": 1}  # type: ignore[union-attr]


async def test_a_refused_connection_is_classified(tmp_path: Path) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    result = await script_probe(EXAMPLE / "login_check.py").probe_once(f"http://127.0.0.1:{port}")
    assert not result.success
    assert result.extras["errors"].values["connect_refused"] == 1, result.error  # type: ignore[union-attr]


async def test_the_timeout_cancels_the_check_and_names_its_step(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    check_file = tmp_path / "slow.py"
    check_file.write_text(
        "import trio\n"
        "async def check(ctx, target):\n"
        "    async with ctx.step('wait'):\n"
        "        await trio.sleep(60)\n"
    )
    result = await script_probe(check_file, timeout=0.5).probe_once("http://unused.invalid")
    assert not result.success
    assert result.timeout
    assert result.error == "step 'wait': timed out after 0.5s"
    assert result.extras["step_failures"].values == {"wait": 1}  # type: ignore[union-attr]


async def test_a_check_that_blocks_the_loop_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    check_file = tmp_path / "blocking.py"
    check_file.write_text(
        "import time\n"
        "async def check(ctx, target):\n"
        "    time.sleep(0.2)  # what a synchronous requests.get does to the loop\n"
    )
    caplog.set_level(logging.WARNING, logger="trioprobe.probes.script")
    result = await script_probe(check_file).probe_once("http://unused.invalid")
    assert result.success
    assert result.extras["loop_blocked"] == 1
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "check check held the event loop for" in warning
    assert "time.sleep" in warning

    # The positive control: a check that only awaits is not named.
    caplog.clear()
    check_file.write_text("import trio\nasync def check(ctx, target):\n    await trio.sleep(0.2)\n")
    quiet = await script_probe(check_file).probe_once("http://unused.invalid")
    assert quiet.extras["loop_blocked"] == 0
    assert caplog.records == []


def test_import_errors_name_the_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("async def check(ctx, target):\n    return (\n")
    with pytest.raises(CheckLoadError, match=rf"{broken}:2: SyntaxError"):
        load_check(str(broken))
    failing = tmp_path / "failing.py"
    failing.write_text("import os\n\nSETTING = undefined_name\n")
    with pytest.raises(CheckLoadError, match=rf"{failing}:3: NameError: name 'undefined_name'"):
        load_check(str(failing))
    sync = tmp_path / "sync.py"
    sync.write_text("def check(ctx, target):\n    pass\n")
    with pytest.raises(CheckLoadError, match="not an async function"):
        load_check(str(sync))
    with pytest.raises(CheckLoadError, match="has no function 'nope'"):
        load_check(str(sync), "nope")
    with pytest.raises(CheckLoadError, match="cannot import 'no_such_module_here'"):
        load_check("no_such_module_here")


def test_a_config_resolves_the_module_beside_it_and_reports_import_errors(tmp_path: Path) -> None:
    config = load_config(EXAMPLE / "checks.toml")
    ((_, options),) = config.probes
    assert options.module == str(EXAMPLE / "login_check.py")
    Runner(config)  # imports the check: no error

    (tmp_path / "bad.py").write_text("async def check(ctx, target):\n    x = = 1\n")
    path = tmp_path / "probe.toml"
    path.write_text(
        '[[probe]]\nname = "s"\ntype = "script"\nmodule = "bad.py"\ntargets = ["http://a"]\n'
    )
    with pytest.raises(ConfigError, match=r"probe 's': module: .*bad\.py:2: SyntaxError"):
        Runner(load_config(path))
    dotted = tmp_path / "dotted.toml"
    dotted.write_text(
        '[[probe]]\nname = "s"\ntype = "script"\nmodule = "json"\ntargets = ["http://a"]\n'
    )
    # A dotted name is imported, not resolved as a path: json has no `check`.
    with pytest.raises(ConfigError, match="module: json: has no function 'check'"):
        Runner(load_config(dotted))


async def test_metric_names_and_values_are_checked() -> None:
    ctx = CheckContext(None, "t")  # type: ignore[arg-type]
    ctx.metric("items", 3)
    with pytest.raises(ValueError, match="letters, digits"):
        ctx.metric("bad name", 1)
    with pytest.raises(ValueError, match="finite"):
        ctx.metric("nan", float("nan"))
    assert ctx.metrics == {"items": 3.0}


@pytest.mark.parametrize(
    ("password", "passes"), [("wonderland", True), ("wrong", False)], ids=["right", "wrong"]
)
def test_the_same_check_file_runs_under_pytest(app_url: str, password: str, passes: bool) -> None:
    env = {**os.environ, "APP_URL": app_url, "CHECK_PASSWORD": password}
    started = time.monotonic()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            str(EXAMPLE / "login_check.py"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - started < 120
    if passes:
        assert run.returncode == 0, run.stdout + run.stderr
        assert "1 passed" in run.stdout
    else:
        assert run.returncode == 1, run.stdout + run.stderr
        assert "check check failed (validation): step 'login': AssertionError" in run.stdout
