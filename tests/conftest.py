"""Suite-wide guard: no test may leave a history database in the repository.

History is on by default beside a config file (docs/history.md), so a test that runs a config
from examples/ (or any file in the tree) without pointing ``[history]`` at a temporary folder
would write one there. The session fails if any appeared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_NAME = "trioprobe-history.sqlite"
_SKIP = {".venv", ".git", "node_modules", "__pycache__"}


def _found() -> set[Path]:
    out = set()
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in _SKIP]
        out.update(Path(folder, f) for f in files if f.startswith(_NAME))
    return out


_BEFORE = _found()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    litter = sorted(_found() - _BEFORE)
    if litter:
        names = ", ".join(str(p.relative_to(ROOT)) for p in litter)
        print(f"\ntests left history databases in the repository: {names}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
