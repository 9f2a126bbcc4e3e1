"""The durable outbox: alerts and verdicts wait here until the broker (or the feed) has them.

Rows live in the journal's SQLite file, in tables of their own, so an alert survives kill -9
and a broker outage exactly like an image does. A publisher takes rows in ``seq`` order,
sends them, and deletes them only after the broker acknowledged (PUBACK): delivery is at
least once, and every alert carries its ``id`` so consumers drop the rare duplicate.

A series' verdict is retained on the broker, where only the latest counts, so a new verdict
replaces one of the same series still waiting here: an outage does not replay every state a
series passed through. ``last_verdicts`` keeps the latest verdict of each series so a command
(hold, release, repeat) can republish it with the new state.

A row the broker or the client refuses (see :mod:`agent.alerts.mqtt`) is moved to
``alert_quarantine`` with its reason rather than retried for ever, so it cannot block the
rows behind it; ``alert_attempts`` counts, per row, connections lost while it was sent alone.

Every method blocks on SQLite (and fsync); call them from a worker thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from agent.alerts.topics import series_topic
from agent.journal.database import connect, locked_transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,                 -- alert | verdict | clear
    topic TEXT NOT NULL,                -- below P/A: 'alerts' or 'series/<uid>'
    payload TEXT NOT NULL,              -- '' clears a retained message
    retain INTEGER NOT NULL,
    series_uid TEXT,
    last_image_at REAL,                 -- for an alert's latency_ms at publication
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_outbox_series ON alert_outbox(series_uid, kind);
CREATE TABLE IF NOT EXISTS alert_attempts (
    seq INTEGER PRIMARY KEY,            -- an alert_outbox row
    failures INTEGER NOT NULL           -- connections lost with it alone in flight
);
CREATE TABLE IF NOT EXISTS alert_quarantine (
    seq INTEGER PRIMARY KEY,            -- its alert_outbox seq
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    retain INTEGER NOT NULL,
    series_uid TEXT,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL,
    quarantined_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS last_verdicts (
    series_uid TEXT PRIMARY KEY,
    payload TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(_SCHEMA)


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    kind: str
    topic: str
    payload: str
    retain: bool
    last_image_at: float | None
    series_uid: str | None = None


@dataclass(frozen=True, slots=True)
class Quarantined:
    seq: int
    kind: str
    topic: str
    series_uid: str | None
    reason: str


class Outbox:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()  # one connection, used from worker threads
        ensure_schema(conn)

    @classmethod
    def open(cls, journal_path: Path) -> Outbox:
        journal_path.parent.mkdir(parents=True, exist_ok=True)
        return cls(connect(journal_path))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return locked_transaction(self._conn, self._lock)

    # -- producing -------------------------------------------------------------------------

    def put(
        self,
        verdict: tuple[str, str] | None = None,
        alert: tuple[str, float | None] | None = None,
    ) -> None:
        """Queue a verdict ``(series_uid, json)`` and then an alert ``(json, last_image_at)``
        in one transaction, so a crash keeps both or neither."""
        now = time.time()
        with self._tx() as db:
            if verdict is not None:
                self._put_verdict(db, *verdict, now)
            if alert is not None:
                db.execute(
                    "INSERT INTO alert_outbox (kind, topic, payload, retain, last_image_at,"
                    " created_at) VALUES ('alert', 'alerts', ?, 0, ?, ?)",
                    (alert[0], alert[1], now),
                )

    @staticmethod
    def _put_verdict(db: sqlite3.Connection, series_uid: str, payload: str, now: float) -> None:
        db.execute(  # a retained topic keeps only the latest: drop the one still waiting
            "DELETE FROM alert_outbox WHERE series_uid = ? AND kind IN ('verdict', 'clear')",
            (series_uid,),
        )
        db.execute(
            "INSERT INTO alert_outbox (kind, topic, payload, retain, series_uid, created_at)"
            " VALUES ('verdict', ?, ?, 1, ?, ?)",
            (series_topic(series_uid), payload, series_uid, now),
        )
        db.execute(
            "INSERT INTO last_verdicts VALUES (?, ?, ?) ON CONFLICT(series_uid) DO UPDATE"
            " SET payload = excluded.payload, updated_at = excluded.updated_at",
            (series_uid, payload, now),
        )

    def clear_verdict(self, series_uid: str) -> None:
        """Queue an empty retained message, which removes the series' verdict from the broker
        (its images were purged)."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "DELETE FROM alert_outbox WHERE series_uid = ? AND kind IN ('verdict', 'clear')",
                (series_uid,),
            )
            db.execute(
                "INSERT INTO alert_outbox (kind, topic, payload, retain, series_uid, created_at)"
                " VALUES ('clear', ?, '', 1, ?, ?)",
                (series_topic(series_uid), series_uid, now),
            )
            db.execute("DELETE FROM last_verdicts WHERE series_uid = ?", (series_uid,))

    # -- consuming -------------------------------------------------------------------------

    def pending(self, limit: int = 256) -> list[Entry]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, kind, topic, payload, retain, last_image_at, series_uid"
                " FROM alert_outbox ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [Entry(r[0], r[1], _topic(r[1], r[2], r[6]), r[3], bool(r[4]), r[5], r[6])
                for r in rows]  # fmt: skip

    def ack(self, seqs: Sequence[int]) -> None:
        """Forget rows the broker (or the feed) has; one transaction, so one fsync."""
        if not seqs:
            return
        with self._tx() as db:
            db.executemany("DELETE FROM alert_outbox WHERE seq = ?", [(s,) for s in seqs])
            db.executemany("DELETE FROM alert_attempts WHERE seq = ?", [(s,) for s in seqs])

    def record_failure(self, seq: int) -> int:
        """One more connection lost while row ``seq`` was sent alone; returns the count."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO alert_attempts VALUES (?, 1)"
                " ON CONFLICT(seq) DO UPDATE SET failures = failures + 1",
                (seq,),
            )
            row = db.execute("SELECT failures FROM alert_attempts WHERE seq = ?", (seq,))
            return int(row.fetchone()[0])

    def quarantine(self, seq: int, reason: str) -> bool:
        """Move row ``seq`` out of the way with its reason; False if it was already gone."""
        with self._tx() as db:
            moved = db.execute(
                "INSERT OR IGNORE INTO alert_quarantine SELECT seq, kind, topic, payload, retain,"
                " series_uid, ?, created_at, ? FROM alert_outbox WHERE seq = ?",
                (reason, time.time(), seq),
            ).rowcount
            db.execute("DELETE FROM alert_outbox WHERE seq = ?", (seq,))
            db.execute("DELETE FROM alert_attempts WHERE seq = ?", (seq,))
        return moved > 0

    def quarantined(self) -> list[Quarantined]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, kind, topic, series_uid, reason FROM alert_quarantine ORDER BY seq"
            ).fetchall()
        return [Quarantined(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def backlog(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM alert_outbox").fetchone()[0])

    def latest_verdict(self, series_uid: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT payload FROM last_verdicts WHERE series_uid = ?", (series_uid,)
            ).fetchone()
        return str(row[0]) if row else None


def _topic(kind: str, stored: str, series_uid: str | None) -> str:
    """A series' topic is derived again from its UID, so a row an older version queued
    with the raw UID in its topic goes out on the safe one."""
    if kind in ("verdict", "clear") and series_uid is not None:
        return series_topic(series_uid)
    return stored
