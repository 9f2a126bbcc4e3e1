"""Objects the agent makes itself: stored as received ones are, and never left half-stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.journal.database import Journal
from agent.receive.local_ingest import store_dataset
from agent.receive.spool import Spool
from tests.support.dicom_factory import ct_slice, series_header


def spooled(spool: Spool) -> list[Path]:
    return sorted(p for p in spool.root.rglob("*.dcm") if spool.incoming not in p.parents)


def test_a_stored_object_is_journaled_with_its_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "state", min_free_bytes=0)
    journal = Journal.open(spool.journal_path)
    ds = ct_slice(series_header(), 0)
    inst = store_dataset(ds, spool, journal)
    assert inst is not None and Path(inst.path).is_file()
    assert spooled(spool) == [Path(inst.path)]
    assert store_dataset(ds, spool, journal) is None  # identical bytes: kept once
    assert spooled(spool) == [Path(inst.path)]


def test_a_failed_journal_write_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path / "state", min_free_bytes=0)
    journal = Journal.open(spool.journal_path)

    def refuse(*_args: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(journal, "record_instance", refuse)
    ds = ct_slice(series_header(), 0)
    for _ in range(3):  # the stage retries; each try must clean up after itself
        with pytest.raises(sqlite3.OperationalError):
            store_dataset(ds, spool, journal)
    assert spooled(spool) == []
    assert list(spool.incoming.iterdir()) == []
    monkeypatch.undo()
    inst = store_dataset(ds, spool, journal)  # once the journal works, it is stored once
    assert inst is not None and spooled(spool) == [Path(inst.path)]
