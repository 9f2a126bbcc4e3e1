"""Per-destination delivery queues, held in the journal.

Order: stat, then urgent, then routine series; series in arrival order; instances in
InstanceNumber order. A result object (an SR about a series) waits until its source series
has been delivered. Only released (or already forwarding) series are eligible, so the
forwarding gate is a state, not a second queue; the one exception is a held series with a
stat finding (``expedited``), which goes out while the technologist decides.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from agent.domain.delivery import Kind, Outcome
from agent.domain.instances import DeliveryState, SeriesState
from agent.journal import counters
from agent.journal.database import Journal, settle_series

QUARANTINED_TOTAL = "quarantined"
# series whose items may go out; their order: stat, urgent, routine (shared with message_queue)
ELIGIBLE = (SeriesState.RELEASED, SeriesState.FORWARDED, SeriesState.QUARANTINED)
PRIORITY_RANK = "CASE s.priority WHEN 'stat' THEN 0 WHEN 'urgent' THEN 1 ELSE 2 END"


@dataclass(frozen=True, slots=True)
class DeliveryItem:
    instance_id: int
    destination: str
    path: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    series_uid: str
    study_uid: str
    priority: str


class DeliveryQueue:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def next_batch(self, destination: str, limit: int) -> list[DeliveryItem]:
        marks = ",".join("?" for _ in ELIGIBLE)
        sql = f"""
            SELECT d.instance_id, d.destination, i.path, i.sop_class_uid, i.sop_instance_uid,
                   i.transfer_syntax, i.series_uid, i.study_uid, s.priority
            FROM deliveries d
            JOIN instances i ON i.id = d.instance_id
            JOIN series s ON s.series_uid = i.series_uid
            WHERE d.destination = ? AND d.state = ? AND (s.state IN ({marks}) OR s.expedited = 1)
              AND (s.derived_from IS NULL OR EXISTS (
                   SELECT 1 FROM series src WHERE src.series_uid = s.derived_from
                   AND (src.state IN ('forwarded', 'quarantined') OR (src.expedited = 1
                        AND NOT EXISTS (SELECT 1 FROM deliveries sd
                            JOIN instances si ON si.id = sd.instance_id
                            WHERE si.series_uid = src.series_uid AND sd.state = 'queued')))))
            ORDER BY {PRIORITY_RANK}, s.first_received_at, i.series_uid,
                     COALESCE(i.instance_number, 0), i.id
            LIMIT ?"""
        with self.journal.reading() as db:
            rows = db.execute(sql, (destination, DeliveryState.QUEUED, *ELIGIBLE, limit))
            return [DeliveryItem(*row) for row in rows.fetchall()]

    def record(self, results: list[tuple[DeliveryItem, Outcome]]) -> None:
        """Commit a batch's outcomes in one transaction, then settle finished series."""
        if not results:
            return
        now = time.time()
        with self.journal.transaction() as db:
            for item, outcome in results:
                delivered = outcome.kind == Kind.DELIVERED
                db.execute(
                    """UPDATE deliveries SET state = ?, last_status = ?, sends = sends + 1,
                           warning = ?, last_error = ?, delivered_at = ?, updated_at = ?
                       WHERE instance_id = ? AND destination = ?""",
                    (outcome.kind.value, outcome.status,
                     outcome.message if delivered else None,
                     None if delivered else outcome.message,
                     now if delivered else None, now, item.instance_id, item.destination),
                )  # fmt: skip
            for series_uid in {item.series_uid for item, _ in results}:
                settle_series(db, series_uid, now)
            count_quarantined(db, results)

    def record_retry(self, item: DeliveryItem, reason: str, status: int | None) -> None:
        with self.journal.transaction() as db:
            db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, "
                "last_status = ?, updated_at = ? WHERE instance_id = ? AND destination = ?",
                (reason, status, time.time(), item.instance_id, item.destination),
            )

    def oldest_undelivered_age(self, destination: str) -> float | None:
        with self.journal.reading() as db:
            row = db.execute(
                "SELECT MIN(queued_at) FROM deliveries WHERE destination = ? AND state = ?",
                (destination, DeliveryState.QUEUED),
            ).fetchone()
        return None if row[0] is None else time.time() - float(row[0])

    # -- operator actions -------------------------------------------------------------------

    def quarantined(self, destination: str | None = None) -> list[dict[str, Any]]:
        sql = """SELECT d.instance_id, d.destination, d.last_status, d.last_error, d.updated_at,
                        i.sop_instance_uid, i.series_uid, i.path
                 FROM deliveries d JOIN instances i ON i.id = d.instance_id
                 WHERE d.state = ? AND (? IS NULL OR d.destination = ?) ORDER BY d.updated_at"""
        with self.journal.reading() as db:
            rows = db.execute(sql, (DeliveryState.QUARANTINED, destination, destination))
            return [dict(r) for r in rows.fetchall()]

    def requeue_quarantined(self, destination: str | None, series_uid: str | None) -> int:
        """Operator: try quarantined items again."""
        return self._set_quarantined(DeliveryState.QUEUED, destination, series_uid)

    def drop_quarantined(self, destination: str | None, series_uid: str | None) -> int:
        """Operator: give up on quarantined items; their files may then be purged."""
        return self._set_quarantined(DeliveryState.DROPPED, destination, series_uid)

    def _set_quarantined(self, state: str, destination: str | None, series_uid: str | None) -> int:
        sql = """UPDATE deliveries SET state = ?, attempts = 0, updated_at = ?
                 WHERE state = ? AND (? IS NULL OR destination = ?) AND (? IS NULL OR
                   instance_id IN (SELECT id FROM instances WHERE series_uid = ?))"""
        with self.journal.transaction() as db:
            cur = db.execute(sql, (state, time.time(), DeliveryState.QUARANTINED,
                                   destination, destination, series_uid, series_uid))  # fmt: skip
            return int(cur.rowcount)

    def resend(self, series_uid: str, destination: str) -> int:
        """Operator: send a series to a destination again, delivered instances included."""
        now = time.time()
        with self.journal.transaction() as db:
            cur = db.execute(
                """INSERT INTO deliveries (instance_id, destination, state, queued_at, updated_at)
                   SELECT id, ?, ?, ?, ? FROM instances WHERE series_uid = ? AND state != 'purged'
                   ON CONFLICT(instance_id, destination) DO UPDATE SET state = excluded.state,
                       attempts = 0, queued_at = excluded.queued_at, updated_at = excluded.updated_at""",
                (destination, DeliveryState.QUEUED, now, now, series_uid),
            )
            db.execute(
                "UPDATE series SET state = ? WHERE series_uid = ? AND state IN (?, ?)",
                (SeriesState.RELEASED, series_uid, SeriesState.FORWARDED, SeriesState.QUARANTINED),
            )
            return int(cur.rowcount)


def count_quarantined(db: sqlite3.Connection, results: list[tuple[DeliveryItem, Outcome]]) -> None:
    """Add a batch's quarantines to /metrics' ``quarantined_total``, in its transaction."""
    quarantined = Counter(i.destination for i, o in results if o.kind == Kind.QUARANTINED)
    for destination, n in quarantined.items():
        counters.count(db, QUARANTINED_TOTAL, {"destination": destination}, n)
