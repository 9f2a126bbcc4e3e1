"""Notes on a series from the stage that made it (a reconstruction that had to assume
something): kept in the journal's events, read by the verdict as warning reasons, so they
survive a restart and reach the verdict however late the series completes."""

from __future__ import annotations

import sqlite3
import time

from agent.journal.database import Journal

KIND = "note"


def record(journal: Journal, series_uid: str, code: str, message: str) -> None:
    """Add the note once per series and code."""
    with journal.transaction() as db:
        if db.execute(
            "SELECT 1 FROM events WHERE kind = ? AND series_uid = ? AND detail LIKE ?",
            (KIND, series_uid, f"{code}\t%"),
        ).fetchone():
            return
        db.execute(
            "INSERT INTO events (at, kind, series_uid, detail) VALUES (?, ?, ?, ?)",
            (time.time(), KIND, series_uid, f"{code}\t{message}"),
        )


def notes_of(db: sqlite3.Connection, series_uid: str) -> list[tuple[str, str]]:
    """(code, message) of the series' notes, oldest first."""
    rows = db.execute(
        "SELECT detail FROM events WHERE kind = ? AND series_uid = ? ORDER BY id",
        (KIND, series_uid),
    ).fetchall()
    return [tuple(str(r[0]).split("\t", 1)) for r in rows if "\t" in str(r[0])]  # type: ignore[misc]
