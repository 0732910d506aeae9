"""What the overview, the detail page and the API share: formatting, CSS, the row snapshot."""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

import attrs
import trio

from ..alerting.history import History
from ..alerting.state import DOWN, UP, TargetHealth
from ..failures import Failure
from ..history import Summary, TargetSummary

__all__ = [
    "BLOCKED",
    "CSS",
    "MAINTENANCE",
    "Hold",
    "Row",
    "Slicer",
    "detail_href",
    "join_body",
    "make_row",
    "ms",
    "pct",
    "shown_state",
    "snapshot_rows",
    "when",
]

CSS = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse;width:100%;background:#fff;table-layout:fixed}
th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:middle}
th{background:#eee}.num{text-align:right;font-variant-numeric:tabular-nums}
.state{font-weight:bold;text-transform:uppercase}
.up .state{color:#1a7f37}.down .state{color:#cf222e}.unknown .state{color:#6e7781}
.blocked .state{color:#9a6700}.maintenance .state{color:#0969da}
tr.down{background:#fff0f0}tr.blocked{background:#fff8e5}tr.maintenance{background:#f0f6ff}.err{color:#6e7781;overflow-wrap:anywhere}
.target{word-break:normal;overflow-wrap:normal}
.target a{color:inherit}
col.c-probe{width:6em}col.c-state{width:7.5em}col.c-since{width:9.5em}
col.c-up{width:5.5em}col.c-days{width:284px}col.c-lat{width:5em}col.c-spark{width:132px}
col.c-alert{width:9em}.target .err{font-size:.9em;margin-top:2px}
form.filter{margin:0 0 1em}form.filter input,form.filter select{margin-right:.5em}
.pages a{margin-right:.6em}.muted{color:#6e7781}
"""


def pct(ratio: float | None, digits: int = 2) -> str:
    return "&ndash;" if ratio is None else f"{100 * ratio:.{digits}f}%"


def ms(seconds: float | None) -> str:
    return "&ndash;" if seconds is None else f"{seconds * 1000:.1f} ms"


def when(ts: float, *, zone: bool = True) -> str:
    text = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return text + " UTC" if zone else text


def wrap_target(target: str) -> str:
    """The escaped target with break opportunities after ``/``, ``?``, ``&``, and after ``.``
    or ``:`` followed by a non-digit, so a URL wraps between its parts, never inside a port
    number or an address."""
    out = []
    for i, ch in enumerate(target):
        out.append(html.escape(ch))
        nxt = target[i + 1] if i + 1 < len(target) else ""
        if ch in "/?&" or (ch in ".:" and nxt and not nxt.isdigit()):
            out.append("<wbr>")
    return "".join(out)


def detail_href(probe: str, target: str) -> str:
    return f"/status/{quote(probe, safe='')}/{quote(target, safe='')}"


#: Longest the page's code holds the event loop between two checkpoints (seconds).
STEP_BUDGET = 0.0005


class Slicer:
    """Lets other tasks run whenever a loop over many items has held the loop for
    :data:`STEP_BUDGET`: work per item varies (a row with incidents, a long target), so the
    pause is by time, not by a count of items. A clock read costs ~0.1 us per item."""

    __slots__ = ("_since",)

    def __init__(self) -> None:
        self._since = time.perf_counter()

    async def tick(self) -> None:
        if time.perf_counter() - self._since >= STEP_BUDGET:
            await trio.lowlevel.checkpoint()
            self._since = time.perf_counter()


#: Characters of text encoded at a time when a body is joined (a few hundred microseconds).
_ENCODE_CHUNK = 1 << 16


async def join_body(parts: Iterable[str]) -> bytes:
    """Join and encode ``parts`` (the pieces of a page or a JSON document) a time slice at a
    time: a piece each step until the slice is spent, and the text encoded 64 KiB at a time,
    so even a 2 MiB body never holds the loop for more than a fraction of a millisecond."""
    chunks: list[bytes] = []
    pending: list[str] = []
    size = 0
    slicer = Slicer()
    for part in parts:
        pending.append(part)
        size += len(part)
        if size >= _ENCODE_CHUNK:
            chunks.append("".join(pending).encode())
            pending, size = [], 0
        await slicer.tick()
    chunks.append("".join(pending).encode())
    return b"".join(chunks)


#: How a target's state is shown: its own verdict, or why its alerts are held.
Hold = Callable[[str, str, str], "str | None"]
BLOCKED = "blocked"
MAINTENANCE = "maintenance"
#: Sort rank of each shown state: down first, then held, then the rest.
_RANK = {DOWN: 0, BLOCKED: 1, MAINTENANCE: 1}


def shown_state(h: TargetHealth, hold: Hold | None) -> str:
    """``maintenance`` while a window covers the target; ``blocked`` while a dependency is
    down and the target is not up itself; else its own state (docs/alerting.md)."""
    if hold is None:
        return h.state
    why = hold(h.rule.name, h.probe, h.target)
    if why == MAINTENANCE or (why == BLOCKED and h.state != UP):
        return why
    return h.state


@attrs.frozen
class Row:
    """One target's live state, copied off the live objects on the loop (the sort key too)."""

    order: tuple[int, int, int]
    probe: str
    target: str
    #: What the page shows: ``up``/``down``/``unknown``, or ``blocked``/``maintenance``.
    state: str
    since: float
    alert: str
    firing: bool
    error: str | None
    failures: int
    total: int
    transitions: int
    history: History
    summary: TargetSummary | None
    #: The last failure, classified (trioprobe.failures), and its reason for people.
    failure: Failure | None = None
    reason: str | None = None
    #: The target's own verdict (``up``/``down``/``unknown``), whatever is shown.
    health: str = ""


Entry = tuple[int, TargetHealth, History, str]


def make_row(entry: Entry, summary: Summary, rank: Mapping[str, int]) -> Row:
    """The page's copy of one entry: ``(first-seen index, health, history, shown state)``."""
    n, h, history, state = entry
    return Row(
        order=(_RANK.get(state, 2), rank.get(h.probe, len(rank)), n),
        probe=h.probe,
        target=h.target,
        state=state,
        since=h.since,
        alert=h.rule.name,
        # Held (blocked, maintenance): its fire waits, so the page does not say FIRING.
        firing=state == DOWN and bool(h.rule.name),
        error=h.last_error,
        failures=h.failures,
        total=h.total,
        transitions=h.transitions,
        history=history,
        summary=summary.targets.get((h.probe, h.target)),
        health=h.state,
        failure=h.last_failure,
        reason=h.last_reason,
    )


def snapshot_rows(
    entries: Sequence[tuple[TargetHealth, History]],
    summary: Summary,
    probe_order: Sequence[str],
    start: int,
    stop: int,
    hold: Hold | None = None,
) -> list[Row]:
    """Rows ``start:stop`` of ``entries`` (a :meth:`Health.snapshot`), in one go (tools,
    tests, one badge): the server's pages select first and copy only the rows they show."""
    rank = {p: i for i, p in enumerate(probe_order)}
    return [
        make_row((n, h, history, shown_state(h, hold)), summary, rank)
        for n, (h, history) in enumerate(entries[start:stop], start)
    ]


def failure_fields(row: Row) -> dict[str, str | None]:
    """The last failure's ``reason`` (a :class:`~trioprobe.failures.FailureReason` value, or
    ``latency``), ``phase`` and ``validator``, for JSON: null when the target never failed."""
    f = row.failure
    if f is None:
        return {"reason": row.reason, "phase": None, "validator": None}
    return {"reason": f.reason.value, "phase": f.phase.value, "validator": f.validator}
