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
import string
import subprocess
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs
import trio

from .._spawn import EscapeWatch, kill_group, run_in_group
from ..metrics import Map
from ..results import ProbeResult
from . import TargetsFn
from ._net import ScheduledProbe, at_least, split_host_port

if TYPE_CHECKING:
    from ..specs import ProbeSpec

__all__ = ["Options", "ExternalProbe", "ParsedOutput", "make_probe", "parse_output"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED = frozenset({"total", "success", "timeouts", "latency", "bad_output_lines"})
_FIELDS = frozenset({"target", "host", "port", "probe", "labels"})
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
            fields = [f for _, f, _, _ in string.Formatter().parse(item) if f is not None]
        except ValueError as exc:
            raise ValueError(f"{attribute.name}: bad template {item!r}: {exc}") from None
        for field in fields:
            root = re.split(r"[.\[]", field, maxsplit=1)[0]
            if root not in _FIELDS or "." in field or (root == "labels") != ("[" in field):
                raise ValueError(
                    f"{attribute.name}: unknown placeholder {{{field}}} in {item!r}; expected "
                    "{target}, {host}, {port}, {probe} or {labels[NAME]} ({{ }} for a brace)"
                )


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


def _number(text: str) -> int | float | None:
    # Integers stay integers: a count or a port is not a duration (the live table shows floats
    # as seconds) and exports without a ".0".
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_output(text: str, counters: frozenset[str] = frozenset()) -> ParsedOutput:
    """Read ``name value`` and ``name map:KEY k:v ...`` lines; see the module docstring."""
    out = ParsedOutput()
    bad = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#") or not _NAME.match(parts[0]):
            continue
        name, values = parts[0], parts[1:]
        if name in _RESERVED or not values:
            bad += 1
            continue
        if values[0].startswith("map:"):
            key = values[0][4:]
            pairs = [v.rpartition(":") for v in values[1:]]
            numbers = [(k, _number(v)) for k, sep, v in pairs if sep and k]
            if (
                not _NAME.match(key)
                or len(numbers) != len(pairs)
                or any(n is None for _, n in numbers)
            ):
                bad += 1
                continue
            out.counters[name] = Map(key, {k: n for k, n in numbers if n is not None})
            continue
        value = _number(values[0]) if len(values) == 1 else None
        if value is None:
            if len(values) == 1:
                bad += 1
            continue  # free text ("name: something happened") is not a metric line
        if name in counters:
            # Always a float: a counter summed over runs must keep one type ("5" then "5.5").
            out.counters[name] = float(value)
        else:
            out.gauges[name] = value
    return attrs.evolve(out, bad_lines=bad)


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
        return [item.format_map(fields) for item in self.options.command]

    async def probe_once(self, target: str) -> ProbeResult:
        started = trio.current_time()
        try:
            argv = self.argv(target)
        except KeyError as exc:
            return ProbeResult(target, False, 0.0, error=f"command uses label {exc} not set")
        stdout = b""
        stderr = b""
        too_large = False
        start_error: OSError | None = None
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
            return ProbeResult(target, False, trio.current_time() - started, error=error)
        latency = trio.current_time() - started
        if too_large:
            error = f"output exceeded max_output_bytes ({self.options.max_output_bytes}); killed"
            return ProbeResult(target, False, latency, error=error)
        parsed = parse_output(stdout.decode("utf-8", "replace"), self._counters)
        extras: dict[str, int | float | Map] = {
            **parsed.counters,
            "bad_output_lines": parsed.bad_lines,
        }
        code = process.returncode
        if code == 0:
            return ProbeResult(target, True, latency, extras=extras, gauges=parsed.gauges)
        why = (
            f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        )
        last = stderr.decode("utf-8", "replace").strip().splitlines()
        error = f"{why}: {last[-1][:200]}" if last else why
        return ProbeResult(target, False, latency, error=error, extras=extras, gauges=parsed.gauges)


def make_probe(spec: ProbeSpec, options: Options, targets: TargetsFn) -> ExternalProbe:
    return ExternalProbe(
        options,
        targets,
        interval=spec.interval,
        timeout=spec.timeout,
        probe_name=spec.name,
        labels=spec.labels,
    )
