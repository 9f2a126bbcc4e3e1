"""Retention: a spool file is purged only once every destination confirmed it, and the
retention period has passed since. Quarantined or queued items keep their files; nothing
undelivered is ever purged to make room."""

from __future__ import annotations

import contextlib
import logging
import os
import time

import anyio
import anyio.to_thread

from agent.domain.instances import DeliveryState, InstanceState
from agent.journal.database import Journal

log = logging.getLogger(__name__)

_DONE = (DeliveryState.DELIVERED, DeliveryState.DROPPED)


def purge_delivered(journal: Journal, retention_s: float, limit: int = 1000) -> int:
    """Delete files whose deliveries are all done; returns how many were purged."""
    cutoff = time.time() - retention_s
    sql = """
        SELECT i.id, i.path, i.size FROM instances i
        WHERE i.state != ? AND EXISTS (SELECT 1 FROM deliveries d WHERE d.instance_id = i.id)
          AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.instance_id = i.id
                          AND (d.state NOT IN (?, ?) OR d.updated_at > ?))
        LIMIT ?"""
    with journal.reading() as db:
        rows = db.execute(sql, (InstanceState.PURGED, *_DONE, cutoff, limit)).fetchall()
    for instance_id, path, size in rows:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        with journal.transaction() as db:
            db.execute(
                "UPDATE instances SET state = ? WHERE id = ?", (InstanceState.PURGED, instance_id)
            )
            journal.spooled_bytes -= int(size)  # under the journal's lock, like the receiver
    if rows:
        log.info("purged %d delivered files older than %.0f s", len(rows), retention_s)
    return len(rows)


async def purge_periodically(
    journal: Journal, retention_s: float, interval_s: float = 60.0
) -> None:
    while True:
        await anyio.to_thread.run_sync(purge_delivered, journal, retention_s)
        await anyio.sleep(interval_s)
