"""The judge files a series' rejection note once, queued for its destinations behind it,
and a series whose files are gone gets none (a warning, never an exception)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from agent.journal.database import Journal
from agent.qc.image_qc import MetricsStore
from agent.qc.protocols import load_protocols
from agent.receive.received import describe
from agent.receive.spool import Spool
from agent.verdict.judge import Judge
from agent.verdict.results import series_sources
from tests.support.qc_series import sha256_of, write_series


def _record(journal: Journal, files: list[Path]) -> str:
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        inst, info = describe(ds, path=str(path), size=path.stat().st_size,
                              sha256=sha256_of(path), version=1, received_at=time.time())  # fmt: skip
        assert journal.record_instance(inst, info) is not None
    return str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


@pytest.fixture
def judged(tmp_path: Path) -> Iterator[tuple[Journal, Judge]]:
    """A journal and the judge over it, with the shipped QC protocols."""
    journal = Journal.open(tmp_path / "journal.sqlite")
    try:
        yield journal, Judge(journal, Spool(tmp_path / "spool", min_free_bytes=0),
                             MetricsStore(journal), load_protocols())  # fmt: skip
    finally:
        journal.close()


def test_rejection_note_filed_once_and_never_for_a_series_that_is_gone(
    judged: tuple[Journal, Judge], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal, judge = judged
    files = write_series(tmp_path / "a", "clean", 0, n=3)
    uid = _record(journal, files)
    note = judge.reject(uid, "tech-anna", ["pacs"])
    assert note is not None and judge.reject(uid, "tech-anna", ["pacs"]) is None
    (kos,) = journal.instances_of(note)
    assert dcmread(kos.path).ConceptNameCodeSequence[0].CodeValue == "113001"
    assert (journal.series_row(note) or {})["derived_from"] == uid
    with journal.reading() as db:
        queued = db.execute(
            "SELECT destination FROM deliveries d JOIN instances i ON i.id = d.instance_id "
            "WHERE i.series_uid = ?", (note,),
        ).fetchall()  # fmt: skip
    assert [q[0] for q in queued] == ["pacs"]

    gone = write_series(tmp_path / "b", "clean", 0, n=2)
    lost = _record(journal, gone)
    for path in gone:
        path.unlink()
    with caplog.at_level("WARNING"):
        assert judge.reject(lost, "tech-anna", ["pacs"]) is None
    assert "no stored instance to reject" in caplog.text


def test_reports_take_the_instances_from_the_journal_and_read_one_header(
    judged: tuple[Journal, Judge], tmp_path: Path
) -> None:
    """Result objects never re-read the series: one readable header gives the context, and
    the journal lists what they reference, so a series whose other files are unreadable
    still gets a note naming every stored instance."""
    journal, judge = judged
    files = write_series(tmp_path / "a", "clean", 0, n=3)
    uid = _record(journal, files)
    expected = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files]
    files[0].write_bytes(b"not dicom")  # the first is skipped: the next header is used
    files[2].unlink()
    sources = series_sources(journal, uid)
    assert sources is not None
    assert str(sources.header.SOPInstanceUID) == expected[1]
    assert [inst for _, inst in sources.instances] == expected
    note = judge.reject(uid, "tech-anna", ["pacs"])
    assert note is not None
    (kos,) = journal.instances_of(note)
    content = dcmread(kos.path).ContentSequence
    selected = [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                for i in content if i.ValueType == "IMAGE"]  # fmt: skip
    assert selected == expected, "every stored instance, as an image reference"
