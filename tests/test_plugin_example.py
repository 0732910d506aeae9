"""examples/plugin installs into a throwaway virtualenv, and `trioprobe check` / `run` use its
``file_age`` type, found only through the package's ``trioprobe.probes`` entry point.

The virtualenv has no pip or packages of its own: a ``.pth`` file puts this checkout's ``src``
first and the running interpreter's site-packages (trioprobe's dependencies, pip, setuptools and
wheel from the dev extras) after it. Installing with ``--no-build-isolation --no-index`` builds
the plugin offline. The shared virtualenv is only read: everything is written under ``tmp_path``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from tests.real.services import skip_or_fail

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(argv: list[str | Path]) -> subprocess.CompletedProcess[str]:
    # No PYTHONPATH from the test run: the venv must find everything through its own paths.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(a) for a in argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with the example plugin installed (but not trioprobe: it comes from src)."""
    if any(importlib.util.find_spec(m) is None for m in ("pip", "setuptools", "wheel")):
        skip_or_fail(
            "building the example plugin offline needs pip, setuptools and wheel "
            "(the dev extras: pip install -e '.[dev]')"
        )
    root = tmp_path_factory.mktemp("plugin")
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    shared = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    Path(site.stdout.strip(), "_trioprobe_checkout.pth").write_text(
        "\n".join([str(REPO / "src"), *shared]) + "\n"
    )
    # A copy, so the build's egg-info and build/ directories stay out of the checkout.
    package = shutil.copytree(REPO / "examples" / "plugin", root / "plugin")
    offline = ["--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check"]
    installed = _run([python, "-m", "pip", "install", *offline, "--quiet", package])
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python


def _config(tmp_path: Path, targets: list[Path]) -> Path:
    path = tmp_path / "plugin.toml"
    quoted = ", ".join(f'"{t}"' for t in targets)
    path.write_text(
        f'[[probe]]\nname = "stamps"\ntype = "file_age"\ntargets = [{quoted}]\n'
        "interval = 0.2\nstats_interval = 0.4\nmax_age = 60\n"
        '[[surfacer]]\ntype = "lines"\nformat = "json"\n'
    )
    return path


def test_check_and_run_use_the_plugin_type(venv_python: Path, tmp_path: Path) -> None:
    fresh, stale, missing = tmp_path / "fresh", tmp_path / "stale", tmp_path / "missing"
    fresh.touch()
    stale.touch()
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    config = _config(tmp_path, [fresh, stale, missing])

    check = _run([venv_python, "-m", "trioprobe.cli", "check", config])
    assert check.returncode == 0, check.stderr
    assert "probe 'stamps' (file_age, from distribution trioprobe-file-age 0.1.0)" in check.stdout

    run = _run([venv_python, "-m", "trioprobe.cli", "run", "--quiet", "--duration", "1", config])
    assert run.returncode == 0, run.stderr
    # The summary at exit: one line per target, with the type's own gauge and error.
    summary = {line.split()[1]: line for line in run.stdout.splitlines() if line[:7] == "stamps "}
    assert "success=100.0%" in summary[str(fresh)]
    assert "age_seconds=" in summary[str(fresh)]
    assert "success=0.0%" in summary[str(stale)]
    assert "more than max_age 60s" in summary[str(stale)]
    assert "cannot stat: No such file or directory" in summary[str(missing)]


def test_check_applies_the_plugins_own_checks(venv_python: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, [Path("relative/file")])
    config.write_text(config.read_text().replace("max_age = 60", "max_age = -1"))
    check = _run([venv_python, "-m", "trioprobe.cli", "check", config])
    assert check.returncode == 2
    assert f"{config}: probe[0]: max_age must be > 0 seconds, got -1" in check.stderr
    assert "probe[0].targets[0]: bad target 'relative/file': expected an absolute path" in (
        check.stderr
    )


def test_without_the_plugin_the_type_is_unknown(tmp_path: Path) -> None:
    """The type comes from the installed plugin, not from anything already on this path."""
    config = _config(tmp_path, [tmp_path / "x"])
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    check = subprocess.run(
        [sys.executable, "-m", "trioprobe.cli", "check", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 2
    assert "unknown probe type 'file_age'" in check.stderr
