"""Suite-wide guards.

* No test may leave a history database in the repository. History is on by default beside a
  config file (docs/history.md), so a test that runs a config from examples/ (or any file in
  the tree) without pointing ``[history]`` at a temporary folder would write one there. The
  session fails if any appeared.
* No test may leave the process's signal dispositions, signal mask, working directory or
  environment changed (:func:`_process_state_unchanged`). Later tests run in the same process,
  and the children they start inherit an ignored or blocked signal: a child that inherits an
  ignored SIGINT never sees Ctrl-C (tests/test_readme_example.py).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[1]
_NAME = "trioprobe-history.sqlite"
_SKIP = {".venv", ".git", "node_modules", "__pycache__"}


def _found() -> set[Path]:
    out: set[Path] = set()
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


# SIGKILL and SIGSTOP cannot be handled; the rest can be changed by any library a test loads.
# SIGALRM is pytest-timeout's: it sets it for each test and resets it to SIG_DFL when a test
# fails, between the test and its teardown.
_SIGNALS = sorted(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP, signal.SIGALRM})


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:  # a real-time signal without a name of its own
        return f"signal {signum}"


def _ignored_by_the_kernel() -> frozenset[int]:
    """The process's ignored signals as the kernel has them (``SigIgn``), which is what a child
    inherits: ``signal.getsignal`` only knows what Python set, not what C code set with
    ``sigaction``. Empty where /proc is not there."""
    try:
        with open("/proc/self/status") as f:
            status = f.read()
    except OSError:
        return frozenset()
    for line in status.splitlines():
        if line.startswith("SigIgn:"):
            bits = int(line.split()[1], 16)
            return frozenset(s for s in range(1, bits.bit_length() + 1) if bits >> (s - 1) & 1)
    return frozenset()


@attrs.frozen
class _ProcessState:
    handlers: dict[int, object]
    ignored: frozenset[int]
    mask: frozenset[int]
    cwd: str
    env: dict[str, str]

    @classmethod
    def now(cls) -> _ProcessState:
        return cls(
            handlers={int(s): signal.getsignal(s) for s in _SIGNALS},
            ignored=_ignored_by_the_kernel(),
            mask=frozenset(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
            cwd=os.getcwd(),
            env={k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},
        )

    def changed_handlers(self, before: _ProcessState) -> set[int]:
        changed = {s for s, h in self.handlers.items() if h != before.handlers[s]}
        return changed | (self.ignored ^ before.ignored)

    def changes_since(self, before: _ProcessState) -> list[str]:
        out = []
        for s in sorted(self.changed_handlers(before)):
            was, now = before.handlers[s], self.handlers[s]
            if was == now:  # changed outside Python: only the kernel's ignored set tells
                ignored = s in before.ignored
                was, now = ("ignored", "not ignored") if ignored else ("not ignored", "ignored")
            out.append(f"{_name(s)} handler {was!r} -> {now!r}")
        if self.mask != before.mask:
            names = ", ".join(_name(s) for s in sorted(self.mask ^ before.mask))
            out.append(f"signal mask changed for {names}")
        if self.cwd != before.cwd:
            out.append(f"working directory {before.cwd!r} -> {self.cwd!r}")
        env, was = self.env, before.env
        for key in sorted(k for k in env.keys() | was.keys() if env.get(k) != was.get(k)):
            out.append(f"environment variable {key} {was.get(key)!r} -> {env.get(key)!r}")
        return out

    def restore(self, changed: set[int]) -> None:
        """Put this state back, so the failure is the polluting test's alone."""
        for s in changed:
            handler = self.handlers[s]
            if handler is not None:  # None: set outside Python, nothing Python can put back
                signal.signal(s, handler)  # type: ignore[arg-type]
        signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        os.chdir(self.cwd)
        for key in os.environ.keys() - self.env.keys() - {"PYTEST_CURRENT_TEST"}:
            del os.environ[key]
        os.environ.update(self.env)


def pytest_report_header(config: pytest.Config) -> str | None:
    """Say so when pytest itself was started with SIGINT ignored or blocked: every child a test
    starts inherits that. A non-interactive shell starts a background job (``cmd &``) with
    SIGINT and SIGQUIT ignored, which gives the README example's child an ignored SIGINT (what
    two CI runs saw: tests/test_readme_example.py)."""
    start = _ProcessState.now()
    told = [
        f"{name} {signal.SIGINT.name}"
        for name, signals in (("ignored", start.ignored), ("blocked", start.mask))
        if signal.SIGINT in signals
    ]
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN and not told:
        told.append(f"ignored {signal.SIGINT.name}")
    return f"inherited by this process and its children: {', '.join(told)}" if told else None


@pytest.fixture(autouse=True)
def _process_state_unchanged() -> Iterator[None]:
    """Fail the test that leaves signal handlers, ignored signals, the signal mask, the working
    directory or the environment changed (monkeypatch's changes are undone before this check:
    autouse fixtures are torn down last)."""
    before = _ProcessState.now()
    yield
    after = _ProcessState.now()
    changes = after.changes_since(before)
    if changes:
        before.restore(after.changed_handlers(before))
        pytest.fail("the test left the process changed: " + "; ".join(changes), pytrace=False)
