"""A schema-1 file (hour and day rows rolled up in batches, an hour late) is migrated in place
to schema 2 when opened: the missing hour and day rows are made, the held-apart columns added,
and every window reads the same counts as the minutes it was made from."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from trioprobe.history import open_store
from trioprobe.history._windows import DAY, HOUR
from trioprobe.history.store import SCHEMA_VERSION, MinuteRow

# The schema-1 layout, as trioprobe 0.x wrote it (before this change).
V1 = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE target(id INTEGER PRIMARY KEY, probe TEXT NOT NULL, target TEXT NOT NULL,
    bounds TEXT NOT NULL, UNIQUE(probe, target));
CREATE TABLE rollup(target_id INTEGER NOT NULL, tier INTEGER NOT NULL, t INTEGER NOT NULL,
    probes INTEGER NOT NULL, successes INTEGER NOT NULL, latency_sum REAL NOT NULL,
    hist TEXT, error TEXT, PRIMARY KEY(target_id, tier, t)) WITHOUT ROWID;
CREATE TABLE incident(id INTEGER PRIMARY KEY, target_id INTEGER NOT NULL, start REAL NOT NULL,
    end REAL, reason TEXT, alert TEXT NOT NULL);
CREATE TABLE transition(target_id INTEGER NOT NULL, t REAL NOT NULL, old TEXT NOT NULL,
    new TEXT NOT NULL, error TEXT);
"""
DAY0 = 1_750_000_000 // DAY * DAY
START = DAY0 - 2 * HOUR  # two hours before midnight ...
END = DAY0 + 2 * HOUR + 25 * 60  # ... to 02:25 the next day


def _minute(t: int) -> tuple[int, int]:
    """(probes, successes) of the scripted minute starting at ``t``."""
    return 6, 6 - (t // 60 % 7 == 0)


def _v1(path: Path) -> None:
    c = sqlite3.connect(path)
    c.executescript(V1)
    c.execute("INSERT INTO meta VALUES('schema', '1')")
    c.execute("INSERT INTO target VALUES(1, 'web', 'a', '[0.0, 0.01]')")
    minutes = [(1, 0, t, *_minute(t), 0.01, '{"1":5}', None) for t in range(START, END, 60)]
    c.executemany("INSERT INTO rollup VALUES(?,?,?,?,?,?,?,?)", minutes)
    # Schema 1 had rolled up the first two hours (and so the first day) and no further.
    for h in (START, START + HOUR):
        p = sum(_minute(t)[0] for t in range(h, h + HOUR, 60))
        s = sum(_minute(t)[1] for t in range(h, h + HOUR, 60))
        c.execute("INSERT INTO rollup VALUES(1, 1, ?, ?, ?, 0.6, '{\"1\":300}', NULL)", (h, p, s))
    p, s = c.execute(
        "SELECT sum(probes), sum(successes) FROM rollup WHERE tier=1 AND t<?", (DAY0,)
    ).fetchone()
    c.execute("INSERT INTO rollup VALUES(1, 2, ?, ?, ?, 1.2, NULL, NULL)", (DAY0 - DAY, p, s))
    c.execute("INSERT INTO meta VALUES('hours_done', ?)", (str(DAY0),))
    c.execute("INSERT INTO meta VALUES('days_done', ?)", (str(DAY0),))
    c.commit()
    c.close()


def _truth(a: int, b: int) -> tuple[int, int]:
    counts = [_minute(t) for t in range(max(a, START), min(b, END), 60)]
    return sum(p for p, _ in counts), sum(s for _, s in counts)


def test_a_schema_1_file_is_migrated_and_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    _v1(path)
    store = open_store(path)
    try:
        c = store.read_conn
        assert c.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        assert c.execute("SELECT count(*) FROM meta WHERE key LIKE '%_done'").fetchone() == (0,)
        hours = [t for (t,) in c.execute("SELECT t FROM rollup WHERE tier=1 ORDER BY t")]
        assert hours == list(range(START, END, HOUR))  # the partial 02:00 hour too
        days = [t for (t,) in c.execute("SELECT t FROM rollup WHERE tier=2 ORDER BY t")]
        assert days == [DAY0 - DAY, DAY0]
        marks = store.watermarks()
        for a, b in ((START, END), (START + 1800, DAY0 + 3000), (DAY0, END), (DAY0 - DAY, END)):
            counts = store.counts(a, b, marks)[1]
            assert (counts.probes, counts.successes) == _truth(a, b), (a, b)
            assert (counts.blocked, counts.maintenance) == (0, 0)
        # Writing on: the next minutes, one blocked, add to the migrated hour and day rows.
        store.write(
            [MinuteRow("web", "a", "[0.0, 0.01]", END, 6, 5, 0.01, {1: 5}, "x", blocked=2)], []
        )
        day = store.counts(DAY0, END + 60, marks)[1]
        p, s = _truth(DAY0, END)
        assert (day.probes, day.successes, day.blocked) == (p + 6, s + 5, 2)
        hour = c.execute(
            "SELECT probes, blocked, hist FROM rollup WHERE tier=1 AND t=?", (END // HOUR * HOUR,)
        ).fetchone()
        assert hour == (25 * 6 + 6, 2, '{"1":130}')  # 02:00 to 02:25, and the new one
    finally:
        store.close()
    # Opened again: nothing to migrate, nothing changes.
    again = open_store(path)
    try:
        assert (
            again.counts(START, END + 60, again.watermarks())[1].probes == _truth(START, END)[0] + 6
        )
    finally:
        again.close()
