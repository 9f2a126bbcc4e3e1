"""The live series list, read from the journal, so the page cannot drift from ``status`` and
MQTT: each series' latest Verdict (what ``P/A/series/<uid>`` holds, kept in the outbox's
``last_verdicts``), with its state, image count and per-destination delivery as the journal
has them now. A series still receiving has no verdict yet and shows what the journal knows.

:class:`Board` is blocking (SQLite): call it from a worker thread. ``changed()`` is
``PRAGMA data_version``, which moves whenever any other connection commits, so polling it
costs one cheap query and a row changes on the page within one poll of the journal.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.journal.database import connect

MAX_SERIES = 200  # the console shows what happens now; the PACS keeps the history

_SERIES = """
SELECT s.series_uid, s.study_uid, s.modality, s.series_description, s.series_number,
       s.body_part, s.state, s.first_received_at, s.last_received_at, s.updated_at,
       {superseded} AS superseded_at, {payload} AS payload,
       (SELECT COUNT(*) FROM instances i WHERE i.series_uid = s.series_uid) AS images
FROM series s {join}
WHERE s.derived_from IS NULL {one}
ORDER BY s.first_received_at DESC LIMIT ?
"""
_DELIVERIES = """
SELECT i.series_uid, d.destination, d.state, COUNT(*) FROM deliveries d
JOIN instances i ON i.id = d.instance_id
WHERE i.series_uid IN (SELECT value FROM json_each(?))
GROUP BY i.series_uid, d.destination, d.state
"""

Label = Callable[[Mapping[str, Any]], str]


class Board:
    def __init__(self, journal_path: Path, label: Label) -> None:
        self._path = journal_path
        self._label = label
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._version = -1
        self._sql: dict[bool, str] = {}
        self._parsed: dict[str, tuple[str, dict[str, Any]]] = {}  # uid -> (payload, verdict)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self._path, readonly=True)
            self._sql = {one: _series_sql(self._conn, one) for one in (False, True)}
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def changed(self) -> bool:
        """True once after every commit by another connection (and at the first call)."""
        with self._lock:
            version = int(self._db().execute("PRAGMA data_version").fetchone()[0])
            moved, self._version = version != self._version, version
            return moved

    def stale(self) -> None:
        """Make the next :meth:`changed` say True (the last read failed)."""
        self._version = -1

    def series(self, limit: int = MAX_SERIES) -> list[dict[str, Any]]:
        """The newest series first, each a Verdict dict (``series_uid`` always) plus ``label``,
        ``images`` and ``delivery`` (one word for the table)."""
        return self._read(self._sql_for(False), (limit,))

    def one(self, series_uid: str) -> dict[str, Any] | None:
        rows = self._read(self._sql_for(True), (series_uid, 1))
        return rows[0] if rows else None

    def _sql_for(self, one: bool) -> str:
        with self._lock:
            self._db()
            return self._sql[one]

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._lock:
            db = self._db()
            rows = db.execute(sql, args).fetchall()
            uids = [str(r["series_uid"]) for r in rows]
            deliveries = _deliveries(db.execute(_DELIVERIES, (json.dumps(uids),)).fetchall())
            return [self._row(r, deliveries.get(str(r["series_uid"]), {})) for r in rows]

    def audit(self, series_uid: str) -> list[dict[str, Any]]:
        """The series' audit trail: who asked what, and what the journal did."""
        with self._lock:
            try:
                rows = (
                    self._db()
                    .execute(
                        "SELECT at, who, action, from_state, to_state, applied, detail"
                        " FROM series_audit WHERE series_uid = ? ORDER BY id",
                        (series_uid,),
                    )
                    .fetchall()
                )
            except sqlite3.OperationalError:  # no command was ever applied on this journal
                return []
        return [dict(r) for r in rows]

    def _verdict(self, uid: str, payload: str | None) -> dict[str, Any] | None:
        """A copy of the series' verdict; parsed once per new payload, not at every poll."""
        if not payload:
            return None
        cached = self._parsed.get(uid)
        if cached is None or cached[0] != payload:
            try:
                doc = json.loads(payload)
            except ValueError:
                return None
            if not isinstance(doc, dict):
                return None
            cached = self._parsed[uid] = (payload, doc)
            if len(self._parsed) > 4 * MAX_SERIES:  # series that left the list
                self._parsed.pop(next(iter(self._parsed)))
        return dict(cached[1])

    def _row(self, row: sqlite3.Row, deliveries: dict[str, str]) -> dict[str, Any]:
        doc = self._verdict(str(row["series_uid"]), row["payload"]) or {
            "schema": "scanner-agent.verdict/1", "study_uid": row["study_uid"],
            "series_uid": row["series_uid"], "modality": row["modality"],
            "series_description": row["series_description"], "qc": None, "triage": None,
        }  # fmt: skip
        doc["series_uid"] = str(row["series_uid"])
        doc["state"] = str(row["state"])  # the journal's, not the verdict's snapshot
        doc["instances"] = int(row["images"])
        doc["deliveries"] = deliveries  # a held series has none queued yet
        doc["superseded"] = row["superseded_at"] is not None or bool(doc.get("superseded"))
        doc["delivery"] = summarize(doc["deliveries"])
        doc["label"] = self._label({**dict(row), **doc, "payload": None})
        doc["updated_at"] = float(row["updated_at"])
        return doc


def _series_sql(db: sqlite3.Connection, one: bool) -> str:
    """The series query for this journal: one written before commands or verdicts were kept
    (no ``superseded_at`` column, no ``last_verdicts`` table) still reads."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(series)")}
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    verdicts = "last_verdicts" in tables
    return _SERIES.format(
        superseded="s.superseded_at" if "superseded_at" in columns else "NULL",
        payload="v.payload" if verdicts else "NULL",
        join="LEFT JOIN last_verdicts v ON v.series_uid = s.series_uid" if verdicts else "",
        one="AND s.series_uid = ?" if one else "",
    )


def _deliveries(rows: list[sqlite3.Row]) -> dict[str, dict[str, str]]:
    """Per series and destination one state: queued while any instance waits, else
    quarantined if any was, else delivered (dropped items count as given up, not waiting)."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for uid, dest, state, n in rows:
        counts.setdefault(uid, {}).setdefault(dest, {})[state] = int(n)
    out: dict[str, dict[str, str]] = {}
    for uid, dests in counts.items():
        out[uid] = {}
        for dest, states in dests.items():
            word = next(
                (s for s in ("queued", "quarantined", "delivered") if s in states), "dropped"
            )
            out[uid][dest] = word
    return out


def summarize(deliveries: Mapping[str, str]) -> str:
    """One word for the Delivery column: the state all destinations share, else ``mixed``."""
    states = set(deliveries.values())
    if not states:
        return ""
    return states.pop() if len(states) == 1 else "mixed"
