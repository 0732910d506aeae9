"""The SQLite store: schema, batched writes, downsampling, retention and the reads.

Synchronous on purpose: :class:`~trioprobe.history.HistoryService` calls it only through
``trio.to_thread`` (one writer connection, one reader connection, each behind a limiter of
one), so nothing here ever runs on the event loop. SQLite releases the GIL while it steps, and
the heavy reads (sums over thousands of targets) are written as SQL aggregates so the thread
spends its time in C, not holding the GIL against the probes.

Schema version 2 (docs/history.md)::

    target(id, probe, target, bounds)          one row per probe x target ever seen
    rollup(target_id, tier, t, probes, successes, latency_sum, hist, error, blocked, maint)
                                               tier 0: per rollup period (a minute), 1: per hour,
                                               2: per day; hist = {"bucket index": count};
                                               blocked / maint: probes set apart (not in probes)
    incident(id, target_id, start, end, reason, alert)
    transition(target_id, t, old, new, error)
    meta(key, value)                           schema version, the latest period written

Every write adds its minutes to their hour and day rows in the same transaction, so the hour
and day rows are always whole: a window is read from a few dozen rows per target (days in the
middle, hours around them, minutes at the far edge) instead of up to 1,440 minutes a day. A
version-1 file (hours and days rolled up later, in batches) is migrated when opened.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from ._windows import DAY, HOUR, TIER_DAY, TIER_HOUR, TIER_MINUTE, Counts, plan

__all__ = ["MinuteRow", "Retention", "Store", "TransitionRow", "encode_bounds", "open_store"]

logger = logging.getLogger("trioprobe.history")

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS target(
    id INTEGER PRIMARY KEY, probe TEXT NOT NULL, target TEXT NOT NULL, bounds TEXT NOT NULL,
    UNIQUE(probe, target));
CREATE TABLE IF NOT EXISTS rollup(
    target_id INTEGER NOT NULL, tier INTEGER NOT NULL, t INTEGER NOT NULL,
    probes INTEGER NOT NULL, successes INTEGER NOT NULL, latency_sum REAL NOT NULL,
    hist TEXT, error TEXT, blocked INTEGER NOT NULL DEFAULT 0,
    maint INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(target_id, tier, t)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS incident(
    id INTEGER PRIMARY KEY, target_id INTEGER NOT NULL, start REAL NOT NULL, end REAL,
    reason TEXT, alert TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS incident_by_target ON incident(target_id, start);
CREATE TABLE IF NOT EXISTS transition(
    target_id INTEGER NOT NULL, t REAL NOT NULL, old TEXT NOT NULL, new TEXT NOT NULL,
    error TEXT);
CREATE INDEX IF NOT EXISTS transition_by_target ON transition(target_id, t);
"""
# hist is merged in SQL (json_each, json_group_object): the writer thread stays in C, where
# SQLite has released the GIL, rather than in a Python function holding it against the loop.
_UPSERT = (
    "INSERT INTO rollup VALUES(?,{tier},?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET "
    "probes=probes+excluded.probes, successes=successes+excluded.successes, "
    "latency_sum=latency_sum+excluded.latency_sum, "
    "blocked=blocked+excluded.blocked, maint=maint+excluded.maint, "
    "hist=CASE WHEN hist IS NULL THEN excluded.hist WHEN excluded.hist IS NULL THEN hist ELSE "
    "(SELECT json_group_object(k, n) FROM (SELECT key k, SUM(value) n FROM "
    "(SELECT key, value FROM json_each(rollup.hist) "
    "UNION ALL SELECT key, value FROM json_each(excluded.hist)) GROUP BY key)) END, "
    "error=coalesce(excluded.error, error)"
)
# Every target's rows of one tier in [?, ?): a primary-key search per target, in target order,
# so GROUP BY target_id needs no sorting (a join from `target` would sort).
_EACH_TARGET = "target_id IN (SELECT id FROM target) AND tier=? AND t>=? AND t<?"
#: Window ends past every row written (see :meth:`Store.watermarks`).
ALL_WRITTEN = 1 << 62
#: Failure reasons are kept per minute, cut to this many characters.
MAX_ERROR_CHARS = 200


@attrs.frozen
class Retention:
    """How long each tier is kept, in seconds (minutes 48 h, hours 90 d, days 2 y)."""

    minutes: float = 48 * HOUR
    hours: float = 90 * DAY
    days: float = 730 * DAY


@attrs.frozen
class MinuteRow:
    """One target's rollup period, as the recorder closes it."""

    probe: str
    target: str
    bounds: str
    t: int
    probes: int
    successes: int
    latency_sum: float
    hist: dict[int, int]
    error: str | None
    #: Probes made while a dependency was down / in a maintenance window that does not count
    #: in the SLO: kept apart, not in ``probes`` and ``successes``.
    blocked: int = 0
    maint: int = 0


@attrs.frozen
class TransitionRow:
    probe: str
    target: str
    t: float
    old: str
    new: str
    error: str | None
    alert: str


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a commit survives the process being killed (kill -9); only a power
    # loss can take back the last commits, which costs at most a minute of history.
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _move_aside(path: Path, why: BaseException) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            part.replace(Path(f"{aside}{suffix}"))
    logger.warning(
        "history database %s unreadable (%s): moved to %s, starting afresh", path, why, aside
    )


def open_store(path: Path) -> Store:
    """Open (or create) the store at ``path``; an unreadable one is moved aside, never fatal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return Store(path)
    except sqlite3.DatabaseError as exc:
        _move_aside(path, exc)
        return Store(path)


class Store:
    """One SQLite database; a writer and a reader connection (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.write_conn = _connect(path)
        try:
            self._create_or_migrate()
            # A file that is a database but damaged inside fails here rather than mid-run.
            row = self.write_conn.execute("PRAGMA quick_check(1)").fetchone()
            if row[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {row[0]}")
        except sqlite3.DatabaseError:
            self.write_conn.close()
            raise
        self.read_conn = _connect(path)
        self._ids: dict[tuple[str, str], int] = {}
        self._pruned = -math.inf

    def close(self) -> None:
        self.write_conn.close()
        self.read_conn.close()

    # -- writing (the one writer thread) --------------------------------------------------------
    def _target_id(self, probe: str, target: str, bounds: str) -> int:
        key = (probe, target)
        tid = self._ids.get(key)
        if tid is None:
            c = self.write_conn
            c.execute(
                "INSERT OR IGNORE INTO target(probe, target, bounds) VALUES(?,?,?)",
                (probe, target, bounds),
            )
            tid, old = c.execute(
                "SELECT id, bounds FROM target WHERE probe=? AND target=?", key
            ).fetchone()
            if old != bounds:
                # The probe's buckets changed: older histograms cannot be merged with new
                # ones, so they are dropped (uptime and mean latency are kept).
                c.execute("UPDATE target SET bounds=? WHERE id=?", (bounds, tid))
                c.execute("UPDATE rollup SET hist=NULL WHERE target_id=?", (tid,))
            self._ids[key] = tid
        return tid

    def _create_or_migrate(self) -> None:
        c = self.write_conn
        row = None
        if c.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone():
            row = c.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        version = SCHEMA_VERSION if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this trioprobe's ({SCHEMA_VERSION})"
            )
        if version == 1:
            _migrate_1_to_2(c, self.path)
        c.executescript(_SCHEMA)
        c.execute("INSERT OR REPLACE INTO meta VALUES('schema', ?)", (str(SCHEMA_VERSION),))

    def write(self, rows: Sequence[MinuteRow], transitions: Sequence[TransitionRow]) -> None:
        """One transaction: the closed rollup periods (added to their hour and day rows too)
        and the transitions since the last write."""
        c = self.write_conn
        c.execute("BEGIN IMMEDIATE")
        try:
            params = [
                (
                    self._target_id(r.probe, r.target, r.bounds),
                    r.t,
                    r.probes,
                    r.successes,
                    r.latency_sum,
                    json.dumps({str(k): v for k, v in r.hist.items()}, separators=(",", ":"))
                    if r.hist
                    else None,
                    None if r.error is None else r.error[:MAX_ERROR_CHARS],
                    r.blocked,
                    r.maint,
                )
                for r in rows
            ]
            c.executemany(_UPSERT.format(tier=TIER_MINUTE), params)
            # The hour and day rows grow with every write (a late result included), so they
            # are always whole and a kill -9 leaves the tiers agreeing with each other.
            for tier, step in ((TIER_HOUR, HOUR), (TIER_DAY, DAY)):
                coarse = [(p[0], p[1] // step * step, *p[2:6], None, *p[7:]) for p in params]
                c.executemany(_UPSERT.format(tier=tier), coarse)
            if params:
                c.execute(
                    "INSERT INTO meta VALUES('latest', ?) ON CONFLICT DO UPDATE SET "
                    "value=max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                    (str(max(p[1] for p in params)),),
                )
            for tr in transitions:
                self._transition(tr)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def _transition(self, tr: TransitionRow) -> None:
        c = self.write_conn
        tid = self._ids.get((tr.probe, tr.target))
        if tid is None:
            row = c.execute(
                "SELECT id FROM target WHERE probe=? AND target=?", (tr.probe, tr.target)
            ).fetchone()
            if row is None:
                c.execute(
                    "INSERT INTO target(probe, target, bounds) VALUES(?,?,'')",
                    (tr.probe, tr.target),
                )
                row = c.execute("SELECT last_insert_rowid()").fetchone()
            tid = row[0]
        error = None if tr.error is None else tr.error[:MAX_ERROR_CHARS]
        c.execute("INSERT INTO transition VALUES(?,?,?,?,?)", (tid, tr.t, tr.old, tr.new, error))
        open_ = c.execute(
            "SELECT id FROM incident WHERE target_id=? AND end IS NULL", (tid,)
        ).fetchone()
        if tr.new == "down":
            # An incident still open from before a restart goes on: the target never came up.
            if open_ is None:
                c.execute(
                    "INSERT INTO incident(target_id, start, reason, alert) VALUES(?,?,?,?)",
                    (tid, tr.t, error, tr.alert),
                )
        elif open_ is not None and (tr.old == "down" or tr.new == "up"):
            c.execute("UPDATE incident SET end=? WHERE id=?", (tr.t, open_[0]))

    def maintain(self, now: float, step: int, retention: Retention) -> bool:
        """Prune what is past retention, once an hour; True if it did. (Nothing else to do:
        the hour and day rows are written with the minutes.)"""
        del step  # the rollup lag of schema 1: rows are whole as written now
        if now - self._pruned < HOUR:
            return False
        self._pruned = now
        self._prune(now, retention)
        return True

    def _prune(self, now: float, retention: Retention) -> None:
        ids = [row[0] for row in self.write_conn.execute("SELECT id FROM target")]
        for tier, keep in (
            (TIER_MINUTE, retention.minutes),
            (TIER_HOUR, retention.hours),
            (TIER_DAY, retention.days),
        ):
            cutoff = int(now - keep)
            self.write_conn.executemany(
                "DELETE FROM rollup WHERE target_id=? AND tier=? AND t<?",
                [(i, tier, cutoff) for i in ids],
            )
        oldest = now - retention.days
        self.write_conn.execute("DELETE FROM incident WHERE end IS NOT NULL AND end<?", (oldest,))
        self.write_conn.execute("DELETE FROM transition WHERE t<?", (oldest,))

    # -- reading (the reader connection) ------------------------------------------------------
    def watermarks(self) -> tuple[int, int]:
        """What :func:`~trioprobe.history._windows.plan` may read from hour and day rows: all
        of them, since every write adds to them (schema 2)."""
        return ALL_WRITTEN, ALL_WRITTEN

    def latest(self) -> int | None:
        """The start of the latest period written (``None``: nothing yet)."""
        row = self.read_conn.execute("SELECT value FROM meta WHERE key='latest'").fetchone()
        return None if row is None else int(row[0])

    def targets(self) -> dict[tuple[str, str], tuple[int, tuple[float, ...]]]:
        """(probe, target) -> (id, bucket lower bounds)."""
        out = {}
        for tid, probe, target, bounds in self.read_conn.execute(
            "SELECT id, probe, target, bounds FROM target"
        ):
            out[(probe, target)] = (tid, _bounds(bounds))
        return out

    def target(self, probe: str, target: str) -> tuple[int, tuple[float, ...]] | None:
        """One target's (id, bucket lower bounds), or ``None`` if it has no history."""
        row = self.read_conn.execute(
            "SELECT id, bounds FROM target WHERE probe=? AND target=?", (probe, target)
        ).fetchone()
        return None if row is None else (row[0], _bounds(row[1]))

    def counts(self, a: float, b: float, marks: tuple[int, int]) -> dict[int, Counts]:
        """Probes and successes of every target over ``[a, b)``: target id -> counts."""
        out: dict[int, Counts] = {}
        for tier, lo, hi in plan(a, b, *marks):
            for tid, p, s, blocked, maint in self.read_conn.execute(
                "SELECT target_id, SUM(probes), SUM(successes), SUM(blocked), SUM(maint) "
                f"FROM rollup WHERE {_EACH_TARGET} GROUP BY target_id",
                (tier, lo, hi),
            ):
                counts = Counts(p, s, blocked, maint)
                found = out.get(tid)
                out[tid] = counts if found is None else found + counts
        # One object per distinct value: targets probed alike have equal counts, and a summary
        # holds these for every target (issue 19, memory per target).
        shared: dict[Counts, Counts] = {}
        return {tid: shared.setdefault(counts, counts) for tid, counts in out.items()}

    def hists(self, a: float, b: float, marks: tuple[int, int]) -> dict[int, dict[int, int]]:
        """Every target's latency histogram over ``[a, b)``: id -> {bucket index: count}."""
        out: dict[int, dict[int, int]] = {}
        for tier, lo, hi in plan(a, b, *marks):
            for tid, k, n in self.read_conn.execute(
                "SELECT r.target_id, j.key, SUM(j.value) FROM rollup r, json_each(r.hist) j "
                f"WHERE {_EACH_TARGET} GROUP BY r.target_id, j.key",
                (tier, lo, hi),
            ):
                h = out.setdefault(tid, {})
                h[int(k)] = h.get(int(k), 0) + n
        return out

    def daily(self, first_day: int, now: float, marks: tuple[int, int]) -> dict[int, str]:
        """Per target, ``"day:probes:successes:blocked:maintenance,..."`` from ``first_day`` to
        ``now`` (the day rows, whole as written; parsed only for the rows a page shows, so the
        thousands of rows of a large fleet stay one string each)."""
        del marks  # day rows are always whole (schema 2)
        return dict(
            self.read_conn.execute(
                "SELECT target_id, group_concat(t || ':' || probes || ':' || successes "
                "|| ':' || blocked || ':' || maint) "
                f"FROM rollup WHERE {_EACH_TARGET} GROUP BY target_id",
                (TIER_DAY, first_day, now),
            )
        )

    def rows(
        self, tid: int, a: float, b: float, marks: tuple[int, int]
    ) -> list[tuple[int, int, int, float, str | None]]:
        """One target's rows over ``[a, b)``: (t, probes, successes, latency_sum, hist)."""
        out: list[tuple[int, int, int, float, str | None]] = []
        for tier, lo, hi in plan(a, b, *marks):
            out.extend(
                self.read_conn.execute(
                    "SELECT t, probes, successes, latency_sum, hist FROM rollup "
                    "WHERE target_id=? AND tier=? AND t>=? AND t<? ORDER BY t",
                    (tid, tier, lo, hi),
                )
            )
        out.sort()
        return out

    def failures(self, tid: int, limit: int) -> list[tuple[int, int, int, str | None]]:
        """The target's latest minutes with failures: (t, probes, failures, last reason)."""
        return list(
            self.read_conn.execute(
                "SELECT t, probes, probes - successes, error FROM rollup WHERE target_id=? "
                "AND tier=0 AND successes<probes ORDER BY t DESC LIMIT ?",
                (tid, limit),
            )
        )

    def incidents(
        self, since: float, tids: Iterable[int] | None = None, limit: int = 1000
    ) -> list[tuple[str, str, float, float | None, str | None, str]]:
        """Incidents still open or ended after ``since``, newest first:
        (probe, target, start, end, reason, alert)."""
        sql = (
            "SELECT g.probe, g.target, i.start, i.end, i.reason, i.alert FROM incident i "
            "JOIN target g ON g.id=i.target_id WHERE (i.end IS NULL OR i.end>=?)"
        )
        args: list[object] = [since]
        if tids is not None:
            ids = list(tids)
            sql += f" AND i.target_id IN ({','.join('?' * len(ids))})"
            args.extend(ids)
        sql += " ORDER BY i.start DESC LIMIT ?"
        args.append(limit)
        return list(self.read_conn.execute(sql, args))


@functools.lru_cache(maxsize=64)
def _bounds(text: str) -> tuple[float, ...]:
    # Stored without the leading -inf, which JSON cannot spell. Cached: every target of a probe
    # has the same bounds, and a summary holds them for every target (one tuple and its floats
    # each, 300 bytes: issue 19, memory per target); the tuple is immutable, so sharing is safe.
    if not text:
        return ()
    return (-math.inf, *(float(b) for b in json.loads(text)))


def encode_bounds(lower_bounds: Sequence[float]) -> str:
    return json.dumps(list(lower_bounds[1:]))


def _migrate_1_to_2(c: sqlite3.Connection, path: Path) -> None:
    """Schema 1 -> 2, in place and in one transaction: the two held-apart columns, and the
    hour and day rows schema 1 had not rolled up yet (it did so in batches, an hour late)."""
    logger.warning("history: migrating %s from schema version 1 to 2 (once)", path)
    rows = dict(c.execute("SELECT key, value FROM meta"))
    c.execute("BEGIN IMMEDIATE")
    try:
        c.execute("ALTER TABLE rollup ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0")
        c.execute("ALTER TABLE rollup ADD COLUMN maint INTEGER NOT NULL DEFAULT 0")
        first, last = c.execute("SELECT min(t), max(t) FROM rollup WHERE tier=0").fetchone()
        if first is not None:
            hours_done = int(rows.get("hours_done", 0)) or first // HOUR * HOUR
            days_done = int(rows.get("days_done", 0)) or first // DAY * DAY
            for h in range(max(hours_done, first // HOUR * HOUR), last + 1, HOUR):
                _downsample(c, TIER_MINUTE, TIER_HOUR, h, h + HOUR)
            for d in range(days_done, last + 1, DAY):
                _downsample(c, TIER_HOUR, TIER_DAY, d, d + DAY)
            c.execute("INSERT OR REPLACE INTO meta VALUES('latest', ?)", (str(last),))
        c.execute("DELETE FROM meta WHERE key IN ('hours_done', 'days_done')")
        c.execute("INSERT OR REPLACE INTO meta VALUES('schema', '2')")
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise


def _downsample(c: sqlite3.Connection, src: int, dst: int, lo: int, hi: int) -> None:
    """The ``dst`` row of ``[lo, hi)`` of every target from its ``src`` rows (migration)."""
    c.execute(
        """
        INSERT OR REPLACE INTO rollup(target_id, tier, t, probes, successes, latency_sum, hist)
        SELECT s.target_id, :dst, :lo, s.p, s.s, s.l, h.hist FROM
          (SELECT r.target_id, SUM(r.probes) p, SUM(r.successes) s, SUM(r.latency_sum) l
           FROM target g CROSS JOIN rollup r
           ON r.target_id=g.id AND r.tier=:src AND r.t>=:lo AND r.t<:hi
           GROUP BY r.target_id) s
        LEFT JOIN
          (SELECT target_id, json_group_object(k, n) hist FROM
             (SELECT r.target_id, j.key k, SUM(j.value) n
              FROM target g CROSS JOIN rollup r
              ON r.target_id=g.id AND r.tier=:src AND r.t>=:lo AND r.t<:hi, json_each(r.hist) j
              GROUP BY r.target_id, j.key)
           GROUP BY target_id) h
        ON h.target_id=s.target_id
        """,
        {"src": src, "dst": dst, "lo": lo, "hi": hi},
    )
