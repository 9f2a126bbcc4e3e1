"""An expedited (stat) series goes out while it is held, stays held until the technologist or
the clock decides, and then settles as forwarded without sending anything twice."""

from __future__ import annotations

import time
from pathlib import Path

from agent.domain.delivery import Kind, Outcome
from agent.domain.instances import Instance, SeriesInfo, SeriesState
from agent.journal.database import Journal
from agent.journal.delivery_queue import DeliveryQueue


def _series(journal: Journal, uid: str, n: int = 3) -> None:
    for i in range(n):
        inst = Instance(
            sop_instance_uid=f"{uid}.{i}", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            series_uid=uid, study_uid="1.2.3", transfer_syntax="1.2.840.10008.1.2.1",
            path=f"/spool/{uid}.{i}.dcm", size=10, sha256=f"{uid}-{i}", version=1,
            modality="CT", instance_number=i, received_at=time.time(),
        )  # fmt: skip
        info = SeriesInfo(series_uid=uid, study_uid="1.2.3", modality="CT")
        assert journal.record_instance(inst, info) is not None
    journal.mark_complete(uid, "test", time.time())


def _state(journal: Journal, uid: str) -> str:
    return str(journal.series_state(uid))


def test_expedited_held_series_is_sent_and_stays_held(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.sqlite")
    queue = DeliveryQueue(journal)
    try:
        _series(journal, "1.1")
        _series(journal, "1.2")
        journal.hold_series("1.1", "qc fail: ring_hu")
        journal.hold_series("1.2", "qc fail: ring_hu")
        assert journal.expedite_series("1.1", ["pacs"], "stat finding") == 3
        assert journal.expedite_series("1.1", ["pacs"], "stat finding") == 0, "idempotent"

        batch = queue.next_batch("pacs", 10)
        assert {i.series_uid for i in batch} == {"1.1"}, "a plain held series does not go"
        queue.record([(item, Outcome(Kind.DELIVERED, 0)) for item in batch])
        assert _state(journal, "1.1") == SeriesState.HELD, "delivered, still held for the tech"
        row = journal.series_row("1.1") or {}
        assert (row["flagged"], row["expedited"]) == (1, 1)

        # the technologist (or the hold timeout) releases it: nothing new to send, settled
        assert journal.release_series("1.1", ["pacs"], "hold-timeout", flagged=True) == 0
        assert _state(journal, "1.1") == SeriesState.FORWARDED
        assert queue.next_batch("pacs", 10) == []
        assert _state(journal, "1.2") == SeriesState.HELD
    finally:
        journal.close()


def test_a_release_with_no_destination_is_not_called_forwarded(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.sqlite")
    try:
        _series(journal, "2.1")
        assert journal.release_series("2.1", [], "complete") == 0
        assert _state(journal, "2.1") == SeriesState.RELEASED
    finally:
        journal.close()


def test_an_old_journal_gains_the_expedited_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "journal.sqlite"
    Journal.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE series DROP COLUMN expedited")
    conn.commit()
    conn.close()
    journal = Journal.open(path)
    try:
        _series(journal, "3.1")
        journal.hold_series("3.1", "qc fail")
        assert journal.expedite_series("3.1", ["pacs"], "stat finding") == 3
    finally:
        journal.close()
