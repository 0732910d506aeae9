"""Checks as code: one async Python function that checks a target, run as a monitor or as a test.

A check is ``async def check(ctx, target)``. It does what a user does (log in, fetch, post) with
``ctx.http``, names its stages with ``async with ctx.step("login"):``, and fails by raising:
``assert``, :class:`CheckFailed`, or any error of what it calls. :func:`run_check` runs one
check once and returns a :class:`CheckReport`; the ``script`` probe type runs it on an
interval (docs/checks.md), and the ``trioprobe_run_check`` pytest fixture runs the same function
as a test, so a team writes each check once.

Two things make a script a good citizen of a prober that measures latency:

* the check's own timeout cancels the whole check (Trio cancellation reaches every ``await``);
* a check that holds the event loop (a synchronous ``requests.get``, ``time.sleep``) inflates
  every other probe's latency. :func:`run_check` times each synchronous stretch of the check's
  coroutine (the time between two of its suspensions), reports the longest as
  :attr:`CheckReport.longest_block`, and the probe names the script in a warning.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import re
import ssl
import sys
import time
import traceback
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Mapping,
)
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import httpx
import trio

from .failures import Phase
from .failures import classify as classify_failure

__all__ = [
    "CheckContext",
    "CheckFailed",
    "CheckFn",
    "CheckLoadError",
    "CheckReport",
    "StepTiming",
    "classify",
    "load_check",
    "new_http_client",
    "run_check",
]

logger = logging.getLogger("trioprobe.checks")

#: What a check is: ``async def check(ctx, target) -> None``.
CheckFn = Callable[["CheckContext", str], Awaitable[None]]

_METRIC_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,63}")
#: The most distinct ``ctx.metric`` names one check may set: they become series.
MAX_METRICS = 32


class CheckFailed(Exception):
    """Raise from a check to fail it with a reason of your own (``validation`` by default)."""

    def __init__(self, message: str, *, reason: str = "validation") -> None:
        super().__init__(message)
        self.reason = reason


class CheckLoadError(ValueError):
    """A check's module cannot be imported, or has no such async function; the message names
    the file and line where Python stopped."""


@attrs.frozen
class StepTiming:
    """One ``ctx.step``: its name, how long it took, and whether it ended without an error."""

    name: str
    seconds: float
    ok: bool


@attrs.frozen
class CheckReport:
    """What one run of a check did.

    Attributes:
        success: the check returned without raising (and within its timeout).
        duration: seconds from start to end (Trio's clock).
        steps: every step entered, in the order they ended.
        failed_step: the innermost step the failure happened in (``None``: outside any step, or
            no failure).
        reason: a failure reason, a :class:`~trioprobe.failures.FailureReason` value
            (``timeout``, ``validation``, ``http_status``, ``connect_refused``, ``dns``,
            ``tls_verify``...) or a :class:`CheckFailed`'s own, ``None`` on success.
        message: one line for people: ``step 'login': AssertionError: wrong password``.
        metrics: the values the check set with ``ctx.metric``.
        longest_block: wall-clock seconds of the check's longest synchronous stretch (time it
            held the event loop without a checkpoint).
    """

    target: str
    success: bool
    duration: float
    steps: tuple[StepTiming, ...] = ()
    failed_step: str | None = None
    reason: str | None = None
    message: str | None = None
    metrics: Mapping[str, float] = attrs.field(factory=dict)
    longest_block: float = 0.0


class CheckContext:
    """What a check gets besides its target: an HTTP client, steps, metrics and a logger.

    Attributes:
        http: an ``httpx.AsyncClient`` (on Trio) with the probe's headers, auth and TLS settings.
        log: a logger (``trioprobe.checks.<name>``) whose lines carry the target.
        target: the target being checked.
    """

    def __init__(self, http: httpx.AsyncClient, target: str, *, name: str = "check") -> None:
        self.http = http
        self.target = target
        self.log = logging.LoggerAdapter(
            logging.getLogger(f"trioprobe.checks.{name}"), {"target": target}
        )
        self._steps: list[StepTiming] = []
        self._open: list[str] = []
        self._metrics: dict[str, float] = {}
        self.failed_step: str | None = None

    @property
    def steps(self) -> tuple[StepTiming, ...]:
        return tuple(self._steps)

    @property
    def metrics(self) -> Mapping[str, float]:
        return dict(self._metrics)

    @asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[None]:
        """Time a stage of the check; a failure inside it is reported as that step's."""
        started = trio.current_time()
        self._open.append(name)
        ok = False
        try:
            yield
            ok = True
        finally:
            self._open.pop()
            if not ok and self.failed_step is None:
                self.failed_step = name
            self._steps.append(StepTiming(name, trio.current_time() - started, ok))

    def metric(self, name: str, value: float) -> None:
        """Export ``value`` as a gauge named ``name`` (letters, digits, ``_``) for this target."""
        if not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"metric name {name[:80]!r} must be letters, digits and _")
        if name not in self._metrics and len(self._metrics) >= MAX_METRICS:
            raise ValueError(f"a check may set at most {MAX_METRICS} metrics")
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"metric {name!r} must be finite, got {value!r}")
        self._metrics[name] = number


def classify(exc: BaseException) -> str:
    """The failure reason of an error a check raised (see :attr:`CheckReport.reason`): a
    :class:`~trioprobe.failures.FailureReason` value, or a :class:`CheckFailed`'s own."""
    if isinstance(exc, CheckFailed):
        return exc.reason
    if isinstance(exc, AssertionError):
        return "validation"
    if isinstance(exc, httpx.HTTPStatusError):
        return "http_status"
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return "timeout"
    # The same classification as every other probe type's (refused, dns, tls_verify...).
    return classify_failure(exc, Phase.RUN).reason.value


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {text[:300]}" if text else name


class _Timed:
    """Await a coroutine while timing each synchronous stretch of it (between suspensions).

    Trio drives a task by sending into its coroutine; each send runs the check's code until its
    next real suspension. The longest such send is the longest time the check held the loop.
    """

    def __init__(self, coro: Coroutine[Any, Any, None]) -> None:
        self._coro = coro
        self.longest = 0.0

    def __await__(self) -> Generator[Any, Any, None]:
        coro = self._coro
        send_value: Any = None
        to_throw: BaseException | None = None
        while True:
            began = time.perf_counter()
            try:
                if to_throw is not None:
                    exc, to_throw = to_throw, None
                    yielded = coro.throw(exc)
                else:
                    yielded = coro.send(send_value)
            except StopIteration:
                self._note(began)
                return
            except BaseException:
                self._note(began)
                raise
            self._note(began)
            try:
                send_value = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # delivered into the check, where it belongs
                to_throw, send_value = exc, None

    def _note(self, began: float) -> None:
        self.longest = max(self.longest, time.perf_counter() - began)


async def run_check(
    check: CheckFn,
    target: str,
    *,
    http: httpx.AsyncClient,
    time_limit: float | None = None,
    name: str = "check",
) -> CheckReport:
    """Run ``check(ctx, target)`` once, within ``time_limit`` seconds if given; never raises for
    the check's own failures (they are in the report). Cancellation from outside propagates."""
    ctx = CheckContext(http, target, name=name)
    started = trio.current_time()
    coro = check(ctx, target)
    if not inspect.iscoroutine(coro):
        raise TypeError(f"check {name!r} is not an async function (it returned {coro!r})")
    timed = _Timed(coro)
    failure: BaseException | None = None
    with trio.move_on_after(time_limit if time_limit is not None else float("inf")) as scope:
        try:
            await timed
        except Exception as exc:  # the check's failure, whatever it raised, is the report's
            failure = exc
    duration = trio.current_time() - started
    step = ctx.failed_step or (ctx._open[-1] if ctx._open else None)
    where = f"step {step!r}: " if step else ""
    report = CheckReport(
        target, True, duration, steps=ctx.steps, metrics=ctx.metrics, longest_block=timed.longest
    )
    if scope.cancelled_caught:
        message = f"{where}timed out after {time_limit:g}s"
        return attrs.evolve(
            report, success=False, failed_step=step, reason="timeout", message=message
        )
    if failure is not None:
        message = f"{where}{_one_line(failure)}"
        reason = classify(failure)
        return attrs.evolve(report, success=False, failed_step=step, reason=reason, message=message)
    return report


def new_http_client(
    *,
    headers: Mapping[str, str],
    verify: ssl.SSLContext | bool,
    follow_redirects: bool,
    timeout: float,
) -> httpx.AsyncClient:
    """The ``ctx.http`` of one run: fresh each run, so cookies (a session) never carry over from
    one run or one target to the next, as a real user's would not."""
    return httpx.AsyncClient(
        headers=dict(headers), verify=verify, follow_redirects=follow_redirects, timeout=timeout
    )


def load_check(module: str, function: str = "check") -> CheckFn:
    """Import ``module`` (a ``.py`` file path, or a dotted name) and return its async
    ``function``. Raises :class:`CheckLoadError` naming the file and line Python stopped at."""
    if module.endswith(".py") or "/" in module:
        loaded = _load_file(Path(module))
    else:
        try:
            loaded = importlib.import_module(module)
        except Exception as exc:  # an import runs arbitrary code: any error is the module's
            raise CheckLoadError(f"cannot import {module!r}: {_where(exc)}") from None
    fn = getattr(loaded, function, None)
    if fn is None:
        raise CheckLoadError(f"{module}: has no function {function!r}")
    if not inspect.iscoroutinefunction(fn):
        raise CheckLoadError(f"{module}: {function!r} is not an async function (async def)")
    checked: CheckFn = fn
    return checked


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise CheckLoadError(f"{path}: no such file")
    # A module name of its own per file, so two checks named check.py do not collide, and
    # registered, so dataclasses and pickling inside the check find their module.
    name = f"trioprobe_check_{abs(hash(str(path.resolve()))):x}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CheckLoadError(f"{path}: not a Python module")
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    try:
        spec.loader.exec_module(loaded)
    except Exception as exc:  # an import runs arbitrary code: any error is the module's
        del sys.modules[name]
        raise CheckLoadError(_where(exc, path)) from None
    return loaded


def _where(exc: BaseException, path: Path | None = None) -> str:
    """``file:line: Type: message`` of where an import failed, in the user's file if possible."""
    if isinstance(exc, SyntaxError):
        return f"{exc.filename}:{exc.lineno}: SyntaxError: {exc.msg}"
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if path is not None and Path(f.filename) == path] or frames
    if mine:
        frame = mine[-1]
        return f"{frame.filename}:{frame.lineno}: {_one_line(exc)}"
    return _one_line(exc)
