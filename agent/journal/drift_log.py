"""Rolling samples for the drift watch: one value per series and key, in the journal.

Keys are ``triage:<model>:<label>`` (the series score) and ``qc:<modality>:<metric>`` (the
series median of a QC metric). The baseline of a key is its first :data:`WINDOW` samples, or
the :data:`WINDOW` samples after an operator's pin (``scanner-agent drift pin``); the current
window is its latest :data:`WINDOW` samples. Old samples beyond what both need are pruned.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable

WINDOW = 500  # series in a window (and in the baseline)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS drift_samples (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, series_uid TEXT NOT NULL, value REAL NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS drift_samples_key ON drift_samples(key, id);
CREATE TABLE IF NOT EXISTS drift_pins (key TEXT PRIMARY KEY, after_id INTEGER NOT NULL,
    pinned_at REAL NOT NULL);
"""


def ensure_schema(db: sqlite3.Connection) -> None:
    db.executescript(_SCHEMA)


def record(db: sqlite3.Connection, series_uid: str, samples: Iterable[tuple[str, float]]) -> None:
    now = time.time()
    rows = [(k, series_uid, float(v), now) for k, v in samples]
    db.executemany(
        "INSERT INTO drift_samples (key, series_uid, value, at) VALUES (?, ?, ?, ?)", rows
    )
    for key in {r[0] for r in rows}:
        prune(db, key)


def keys(db: sqlite3.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT DISTINCT key FROM drift_samples ORDER BY key")]


def baseline(db: sqlite3.Connection, key: str, n: int = WINDOW) -> list[float]:
    row = db.execute("SELECT after_id FROM drift_pins WHERE key = ?", (key,)).fetchone()
    after = int(row[0]) if row else 0
    rows = db.execute(
        "SELECT value FROM drift_samples WHERE key = ? AND id > ? ORDER BY id LIMIT ?",
        (key, after, n),
    )
    return [float(r[0]) for r in rows]


def window(db: sqlite3.Connection, key: str, n: int = WINDOW) -> list[float]:
    rows = db.execute(
        "SELECT value FROM drift_samples WHERE key = ? ORDER BY id DESC LIMIT ?", (key, n)
    )
    return [float(r[0]) for r in rows]


def pin(db: sqlite3.Connection, n: int = WINDOW) -> int:
    """Make each key's latest ``n`` samples its new baseline; returns the keys pinned."""
    pinned = 0
    for key in keys(db):
        row = db.execute(
            "SELECT id FROM drift_samples WHERE key = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
            (key, n),
        ).fetchone()
        after = int(row[0]) if row else 0
        db.execute(
            "INSERT INTO drift_pins VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
            "after_id = excluded.after_id, pinned_at = excluded.pinned_at",
            (key, after, time.time()),
        )
        pinned += 1
    return pinned


def prune(db: sqlite3.Connection, key: str, n: int = WINDOW) -> None:
    """Drop the samples between the baseline and the current window: neither needs them."""
    base = db.execute(
        "SELECT MAX(id) FROM (SELECT id FROM drift_samples WHERE key = ? AND id > "
        "COALESCE((SELECT after_id FROM drift_pins WHERE key = ?), 0) ORDER BY id LIMIT ?)",
        (key, key, n),
    ).fetchone()[0]
    recent = db.execute(
        "SELECT MIN(id) FROM (SELECT id FROM drift_samples WHERE key = ? ORDER BY id DESC "
        "LIMIT ?)", (key, n),
    ).fetchone()[0]  # fmt: skip
    if base is not None and recent is not None:
        db.execute(
            "DELETE FROM drift_samples WHERE key = ? AND id > ? AND id < ?", (key, base, recent)
        )
