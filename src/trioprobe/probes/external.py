"""The ``external`` probe type: run a program per target per interval; its exit status decides.

As cloudprober's one-shot external probe: ``command`` is an argv array (never run through a
shell) whose items may use ``{target}``, ``{host}``, ``{port}``, ``{probe}`` and
``{labels[NAME]}``. The program runs in its own process group; when the probe's ``timeout`` runs
out, or its output passes ``max_output_bytes``, the whole group gets SIGKILL. Exit status 0 is
success. Standard output lines of the form::

    name value                      # a number: a gauge, or a counter if listed in `counters`
    name map:KEY k1:v1 k2:v2        # a Map keyed by KEY, accumulated like a counter

become metrics of the result; other lines are ignored (``#`` comments, blanks, free text) and
counted in ``bad_output_lines`` when they look like a metric line but are not one. Names must
match ``[A-Za-z_][A-Za-z0-9_]*`` and may not be one of the standard metrics.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs
import trio

from .._spawn import EscapeWatch, kill_group, run_in_group
from .._templates import TemplateError, check_template, render_template
from ..failures import Failure, FailureReason, Phase, classify, enter_phase
from ..metrics import Map
from ..results import ProbeResult
from . import TargetsFn
from ._net import ScheduledProbe, at_least, split_host_port

if TYPE_CHECKING:
    from ..specs import ProbeSpec

__all__ = ["Options", "ExternalProbe", "ParsedOutput", "make_probe", "parse_output"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED = frozenset({"total", "success", "timeouts", "latency", "bad_output_lines"})
_FIELDS = frozenset({"target", "host", "port", "probe"})
_MAPPINGS = frozenset({"labels"})
# Bytes of standard error kept for the error message of a failed run.
_STDERR_TAIL = 2048


def _check_command(
    _: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    if not value or not value[0]:
        raise ValueError(
            f"{attribute.name} must be a non-empty array: program first, then its arguments"
        )
    for item in value:
        try:
            check_template(item, _FIELDS, _MAPPINGS)
        except TemplateError as exc:
            raise ValueError(f"{attribute.name}: {exc}") from None


@attrs.frozen
class Options:
    """Config keys of an ``external`` probe."""

    #: The program and its arguments (templates), e.g. ``["/usr/local/bin/check", "{target}"]``.
    command: tuple[str, ...] = attrs.field(validator=_check_command)
    #: Output metric names whose values are summed over runs; other numbers are gauges.
    counters: tuple[str, ...] = ()
    #: Standard output beyond this many bytes kills the run and fails the probe.
    max_output_bytes: int = attrs.field(default=65536, validator=at_least(1))
    #: Extra environment variables for the program (added to the inherited environment).
    env: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class ParsedOutput:
    """Metrics read from a program's standard output."""

    gauges: dict[str, int | float] = attrs.field(factory=dict)
    counters: dict[str, int | float | Map] = attrs.field(factory=dict)
    bad_lines: int = 0
    #: Why the output cannot be used (a value out of range), or ``None``.
    problem: str | None = None


class _OutOfRange(Exception):
    """A value that reads as a number trioprobe cannot hold (overflow, too many digits)."""


#: Integers beyond a signed 64-bit range are refused: no counter or gauge means that, and a
#: 310-digit one overflowed ``float()`` downstream (a crash, then 500s on every scrape).
_INT_LIMIT = 2**63
#: A value longer than this is refused before it is parsed (and never quoted whole).
_MAX_VALUE_CHARS = 64
_NON_FINITE = frozenset({"nan", "inf", "infinity"})


def _number(text: str) -> int | float | None:
    """The number in ``text``; ``None`` if it is not one (or NaN/infinity, which no metric
    holds); :class:`_OutOfRange` if it is one that does not fit."""
    if len(text) > _MAX_VALUE_CHARS:
        if text.lstrip("+-")[:1].isdigit() or text.lstrip("+-")[:1] == ".":
            raise _OutOfRange(f"{len(text)} characters")
        return None
    # Integers stay integers: a count or a port is not a duration (the live table shows floats
    # as seconds) and exports without a ".0".
    try:
        value = int(text)
    except ValueError:
        pass
    else:
        if not -_INT_LIMIT < value < _INT_LIMIT:
            raise _OutOfRange(f"{len(text)} digits, beyond 64 bits")
        return value
    try:
        number = float(text)
    except ValueError:
        return None
    if math.isfinite(number):
        return number
    if text.strip().lstrip("+-").lower() in _NON_FINITE:
        return None
    raise _OutOfRange("overflows a float")


def _numbers(pairs: list[tuple[str, str, str]]) -> list[tuple[str, int | float | None]]:
    return [(k, _number(v)) for k, sep, v in pairs if sep and k]


def parse_output(text: str, counters: frozenset[str] = frozenset()) -> ParsedOutput:
    """Read ``name value`` and ``name map:KEY k:v ...`` lines; see the module docstring.

    A value that is a number out of range is refused (counted as a bad line) and named in
    ``problem``, which fails the probe: the program meant a metric that cannot be kept.
    """
    out = ParsedOutput()
    bad = 0
    problem: str | None = None
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#") or not _NAME.match(parts[0]):
            continue
        name, values = parts[0], parts[1:]
        if name in _RESERVED or not values:
            bad += 1
            continue
        try:
            stored = _parse_line(out, name, values, counters)
        except _OutOfRange as exc:
            bad += 1
            problem = problem or f"value of {name[:64]} out of range ({exc})"
            continue
        if stored is None:
            bad += 1
    return attrs.evolve(out, bad_lines=bad, problem=problem)


def _parse_line(
    out: ParsedOutput, name: str, values: list[str], counters: frozenset[str]
) -> bool | None:
    """Store one line's metric in ``out``: True if stored, False for free text, None for a bad
    metric line."""
    if values[0].startswith("map:"):
        key = values[0][4:]
        pairs = [v.rpartition(":") for v in values[1:]]
        numbers = _numbers(pairs)
        if not _NAME.match(key) or len(numbers) != len(pairs) or any(n is None for _, n in numbers):
            return None
        out.counters[name] = Map(key, {k: n for k, n in numbers if n is not None})
        return True
    if len(values) != 1:
        return False  # free text ("name: something happened") is not a metric line
    value = _number(values[0])
    if value is None:
        return None
    if name in counters:
        # Always a float: a counter summed over runs must keep one type ("5" then "5.5").
        out.counters[name] = float(value)
    else:
        out.gauges[name] = value
    return True


class _OutputTooLarge(Exception):
    pass


async def _read_bounded(stream: trio.abc.ReceiveStream, limit: int) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some(65536):
        data += chunk
        if len(data) > limit:
            raise _OutputTooLarge
    return bytes(data)


async def _read_tail(stream: trio.abc.ReceiveStream, keep: int) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data = (data + chunk)[-keep:]
    return data


class ExternalProbe(ScheduledProbe[Options]):
    """Runs the command once per target per interval; see the module docstring."""

    def __init__(
        self,
        options: Options,
        targets: TargetsFn,
        *,
        interval: float,
        timeout: float,
        probe_name: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(options, targets, interval=interval, timeout=timeout)
        self._probe_name = probe_name
        self._labels = dict(labels or {})
        self._counters = frozenset(options.counters)
        self._env = {**os.environ, **options.env} if options.env else None
        #: Counts the processes that left the program's process group and outlived it.
        self.escapes = EscapeWatch(f"external probe {probe_name!r}")

    def argv(self, target: str) -> list[str]:
        """The command for ``target`` with its placeholders filled in."""
        try:
            host, port = split_host_port(target, 0)
        except ValueError:
            host, port = target, 0
        fields = {
            "target": target,
            "host": host,
            "port": str(port) if port else "",
            "probe": self._probe_name,
            "labels": self._labels,
        }
        return [render_template(item, fields) for item in self.options.command]

    async def probe_once(self, target: str) -> ProbeResult:
        started = trio.current_time()
        try:
            argv = self.argv(target)
        except KeyError as exc:
            error = f"command uses label {exc} not set"
            return ProbeResult(target, False, 0.0, error=error, failure=_RUN_OTHER)
        stdout = b""
        stderr = b""
        too_large = False
        start_error: OSError | None = None
        enter_phase(Phase.RUN)  # a deadline from here on is the program's
        try:
            async with trio.open_nursery() as nursery:
                # A new session whose whole group is killed on timeout, on shutdown and after
                # the program exits (see trioprobe._spawn).
                process: trio.Process = await nursery.start(
                    lambda task_status: run_in_group(
                        argv,
                        self.escapes,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        env=self._env,
                        task_status=task_status,
                    )
                )
                assert process.stdout is not None
                assert process.stderr is not None

                async def collect_stderr(stream: trio.abc.ReceiveStream) -> None:
                    nonlocal stderr
                    stderr = await _read_tail(stream, _STDERR_TAIL)

                nursery.start_soon(collect_stderr, process.stderr)
                try:
                    stdout = await _read_bounded(process.stdout, self.options.max_output_bytes)
                except _OutputTooLarge:
                    too_large = True
                    await kill_group(process)
        except* OSError as group:
            start_error = group.exceptions[0]  # type: ignore[assignment]
        await self.escapes.sweep_if_due()
        if start_error is not None:
            error = f"cannot run {argv[0]!r}: {start_error.strerror or start_error}"
            failure = classify(start_error, Phase.RUN)
            if failure.reason is not FailureReason.RESOURCE:
                failure = _PROGRAM_FAILED  # not found, not executable: the program's failure
            latency = trio.current_time() - started
            return ProbeResult(target, False, latency, error=error, failure=failure)
        latency = trio.current_time() - started
        if too_large:
            error = f"output exceeded max_output_bytes ({self.options.max_output_bytes}); killed"
            failure = Failure(FailureReason.BODY_TOO_LARGE, Phase.RUN)
            return ProbeResult(target, False, latency, error=error, failure=failure)
        parsed = parse_output(stdout.decode("utf-8", "replace"), self._counters)
        extras: dict[str, int | float | Map] = {
            **parsed.counters,
            "bad_output_lines": parsed.bad_lines,
        }
        code = process.returncode
        if code == 0 and parsed.problem is None:
            return ProbeResult(target, True, latency, extras=extras, gauges=parsed.gauges)
        if code == 0:
            error = f"output: {parsed.problem}"
            failure = Failure(FailureReason.PROTOCOL, Phase.RUN)  # output it cannot be read as
            return ProbeResult(target, False, latency, error=error, extras=extras, failure=failure)
        why = (
            f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        )
        last = stderr.decode("utf-8", "replace").strip().splitlines()
        error = f"{why}: {last[-1][:200]}" if last else why
        return ProbeResult(
            target,
            False,
            latency,
            error=error,
            extras=extras,
            gauges=parsed.gauges,
            failure=_PROGRAM_FAILED,
        )


_PROGRAM_FAILED = Failure(FailureReason.PROGRAM_FAILED)
_RUN_OTHER = Failure(FailureReason.OTHER, Phase.RUN)


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> ExternalProbe:
    return ExternalProbe(
        options,
        targets,
        interval=spec.interval,
        timeout=spec.timeout,
        probe_name=spec.name,
        labels=spec.labels,
    )
