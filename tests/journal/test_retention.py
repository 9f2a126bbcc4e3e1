"""Files are purged only after every destination confirmed them and retention passed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from agent.domain.delivery import Kind, Outcome
from agent.domain.instances import SeriesInfo
from agent.journal.database import Journal
from agent.journal.delivery_queue import DeliveryQueue
from agent.journal.retention import purge_delivered
from tests.support.instances import slices


def test_only_fully_delivered_files_are_purged(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.sqlite")
    info = SeriesInfo(series_uid="1.2.3", study_uid="1.2", modality="CT")
    for i, inst in enumerate(slices(4)):
        path = tmp_path / f"{i}.dcm"
        path.write_bytes(b"x" * 10)
        journal.record_instance(replace(inst, path=str(path)), info)
    journal.release_series("1.2.3", ["pacs", "archive"])
    queue = DeliveryQueue(journal)
    items = {d: queue.next_batch(d, 10) for d in ("pacs", "archive")}
    ok, bad = Outcome(Kind.DELIVERED, 0), Outcome(Kind.QUARANTINED, 0xC000, "0xC000")
    queue.record([(it, ok) for it in items["pacs"]])  # pacs has all four
    queue.record([(items["archive"][0], ok), (items["archive"][1], bad)])  # archive: 1 of 4
    assert purge_delivered(journal, retention_s=3600) == 0, "retention has not passed"
    assert purge_delivered(journal, retention_s=0) == 1
    assert [p.name for p in sorted(tmp_path.glob("*.dcm"))] == ["1.dcm", "2.dcm", "3.dcm"]
    assert journal.spooled_bytes == 30
    queue.drop_quarantined("archive", None)
    assert purge_delivered(journal, retention_s=0) == 1, "an operator's drop counts as done"
    assert not (tmp_path / "1.dcm").exists() and (tmp_path / "2.dcm").exists()
