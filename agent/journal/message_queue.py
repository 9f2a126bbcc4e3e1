"""Per-destination queues of verdict messages (HL7 ORU^R01, FHIR DiagnosticReport), in the journal.

HL7 and FHIR destinations get one message per verdict, not the images: each row holds the
verdict and the series' patient and study facts as JSON, written when the series is judged.
The semantics are the image queue's: only released (or expedited) series are eligible, stat
then urgent then routine, oldest first; the forwarder retries and quarantines the same way,
and each outcome is committed before the next message goes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.domain.delivery import Kind, Outcome
from agent.domain.instances import DeliveryState
from agent.journal.database import Journal
from agent.journal.delivery_queue import (
    ELIGIBLE,
    PRIORITY_RANK,
    DeliveryItem,
    count_quarantined,
)

_TABLE = """CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    series_uid TEXT NOT NULL,
    destination TEXT NOT NULL,
    body TEXT NOT NULL,  -- JSON: the verdict and the series' patient and study facts
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    sends INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error TEXT,
    warning TEXT,
    queued_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    delivered_at REAL
)"""
_INDEX = "CREATE INDEX IF NOT EXISTS messages_state ON messages(destination, state)"



def has_messages(conn: sqlite3.Connection) -> bool:
    """Whether the journal has the table yet (a reader may open one no agent wrote it in)."""
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'")
    return row.fetchone() is not None


@dataclass(frozen=True, slots=True)
class MessageItem(DeliveryItem):
    """A queued verdict message; ``instance_id`` is the message's row id, ``body`` its JSON."""

    body: str = "{}"

    @property
    def content(self) -> dict[str, Any]:
        doc = json.loads(self.body)
        return doc if isinstance(doc, dict) else {}


class MessageQueue:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        with journal.transaction() as db:  # the table is created by its first user
            db.execute(_TABLE)
            db.execute(_INDEX)

    def enqueue(self, series_uid: str, destinations: Sequence[str], body: dict[str, Any]) -> int:
        """Queue one message per destination; ``correction`` marks a series' later verdicts."""
        now = time.time()
        with self.journal.transaction() as db:
            for dest in destinations:
                (earlier,) = db.execute(
                    "SELECT COUNT(*) FROM messages WHERE series_uid = ? AND destination = ?",
                    (series_uid, dest),
                ).fetchone()
                doc = {**body, "correction": earlier > 0}
                db.execute(
                    "INSERT INTO messages (series_uid, destination, body, state, queued_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (series_uid, dest, json.dumps(doc), DeliveryState.QUEUED, now, now),
                )
        return len(destinations)

    def next_batch(self, destination: str, limit: int) -> list[DeliveryItem]:
        marks = ",".join("?" for _ in ELIGIBLE)
        sql = f"""
            SELECT m.id, m.destination, m.series_uid, s.study_uid, s.priority, m.body
            FROM messages m JOIN series s ON s.series_uid = m.series_uid
            WHERE m.destination = ? AND m.state = ? AND (s.state IN ({marks}) OR s.expedited = 1)
            ORDER BY {PRIORITY_RANK}, m.id LIMIT ?"""
        with self.journal.reading() as db:
            rows = db.execute(sql, (destination, DeliveryState.QUEUED, *ELIGIBLE, limit))
            return [_item(*row) for row in rows.fetchall()]

    def record(self, results: list[tuple[DeliveryItem, Outcome]]) -> None:
        now = time.time()
        with self.journal.transaction() as db:
            for item, outcome in results:
                delivered = outcome.kind == Kind.DELIVERED
                db.execute(
                    """UPDATE messages SET state = ?, last_status = ?, sends = sends + 1,
                           warning = ?, last_error = ?, delivered_at = ?, updated_at = ?
                       WHERE id = ?""",
                    (outcome.kind.value, outcome.status,
                     outcome.message if delivered else None,
                     None if delivered else outcome.message,
                     now if delivered else None, now, item.instance_id),
                )  # fmt: skip
            count_quarantined(db, results)

    def record_retry(self, item: DeliveryItem, reason: str, status: int | None) -> None:
        with self.journal.transaction() as db:
            db.execute(
                "UPDATE messages SET attempts = attempts + 1, last_error = ?, last_status = ?, "
                "updated_at = ? WHERE id = ?",
                (reason, status, time.time(), item.instance_id),
            )

    def oldest_undelivered_age(self, destination: str) -> float | None:
        with self.journal.reading() as db:
            row = db.execute(
                "SELECT MIN(queued_at) FROM messages WHERE destination = ? AND state = ?",
                (destination, DeliveryState.QUEUED),
            ).fetchone()
        return None if row[0] is None else time.time() - float(row[0])

    # -- operator actions (``scanner-agent quarantine``), as for the image queues -----------

    def quarantined(self, destination: str | None = None) -> list[dict[str, Any]]:
        sql = """SELECT id AS instance_id, destination, last_status, last_error, updated_at,
                        'verdict message ' || id AS sop_instance_uid, series_uid, '' AS path
                 FROM messages WHERE state = ? AND (? IS NULL OR destination = ?)
                 ORDER BY updated_at"""
        with self.journal.reading() as db:
            rows = db.execute(sql, (DeliveryState.QUARANTINED, destination, destination))
            return [dict(r) for r in rows.fetchall()]

    def requeue_quarantined(self, destination: str | None, series_uid: str | None) -> int:
        return self._set_quarantined(DeliveryState.QUEUED, destination, series_uid)

    def drop_quarantined(self, destination: str | None, series_uid: str | None) -> int:
        return self._set_quarantined(DeliveryState.DROPPED, destination, series_uid)

    def _set_quarantined(self, state: str, destination: str | None, series_uid: str | None) -> int:
        sql = """UPDATE messages SET state = ?, attempts = 0, updated_at = ?
                 WHERE state = ? AND (? IS NULL OR destination = ?)
                   AND (? IS NULL OR series_uid = ?)"""
        with self.journal.transaction() as db:
            cur = db.execute(sql, (state, time.time(), DeliveryState.QUARANTINED,
                                   destination, destination, series_uid, series_uid))  # fmt: skip
            return int(cur.rowcount)

    def resend(self, series_uid: str, destination: str) -> int:
        """Operator: send the series' latest verdict message to ``destination`` again."""
        now = time.time()
        with self.journal.transaction() as db:
            cur = db.execute(
                """UPDATE messages SET state = ?, attempts = 0, queued_at = ?, updated_at = ?
                   WHERE id = (SELECT MAX(id) FROM messages
                               WHERE series_uid = ? AND destination = ?)""",
                (DeliveryState.QUEUED, now, now, series_uid, destination),
            )
            return int(cur.rowcount)


def message_states(db: sqlite3.Connection, series_uid: str) -> dict[str, str]:
    """Each HL7/FHIR destination's state of the series' latest verdict message."""
    if not has_messages(db):
        return {}
    rows = db.execute(
        "SELECT destination, state FROM messages WHERE series_uid = ? ORDER BY id", (series_uid,)
    ).fetchall()
    return {str(dest): str(state) for dest, state in rows}


def _item(
    msg_id: int, dest: str, series_uid: str, study_uid: str, priority: str, body: str
) -> MessageItem:
    return MessageItem(
        instance_id=msg_id, destination=dest, path="", sop_class_uid="",
        sop_instance_uid=f"verdict message {msg_id}", transfer_syntax="",
        series_uid=series_uid, study_uid=study_uid, priority=priority, body=body,
    )  # fmt: skip
