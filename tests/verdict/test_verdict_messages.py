"""The release gate feeds HL7/FHIR destinations verdicts, not images: one message per
verdict, eligible only once the series is released, and its state shown in the verdict."""

from __future__ import annotations

import time
from pathlib import Path

from pydicom import dcmread

from agent.config import parse_config
from agent.domain.delivery import Kind, Outcome
from agent.journal.database import Journal
from agent.journal.message_queue import MessageQueue
from agent.qc.image_qc import MetricsStore
from agent.receive.received import describe
from agent.receive.spool import Spool
from agent.verdict.gate import ReleaseGate
from agent.verdict.judge import Judge
from tests.support.dicom_factory import write_ct_series
from tests.support.qc_series import sha256_of

CONFIG = """
forward:
  destinations:
    - {kind: folder, name: local}
    - {kind: hl7, name: ris, host: 127.0.0.1, port: 2575}
"""


def record(journal: Journal, files: list[Path]) -> str:
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        inst, info = describe(
            ds, path=str(path), size=path.stat().st_size, sha256=sha256_of(path), version=1,
            received_at=time.time(),
        )  # fmt: skip
        journal.record_instance(inst, info)
    return str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def test_a_held_series_verdict_waits_for_its_release(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.sqlite")
    try:
        cfg = parse_config(CONFIG).forward
        judge = Judge(
            journal, Spool(tmp_path / "spool", min_free_bytes=0), MetricsStore(journal), None
        )
        gate = ReleaseGate(journal, cfg, judge=judge)
        uid = record(journal, write_ct_series(tmp_path / "s", 3))
        journal.hold_series(uid, "technologist")
        verdict = gate.on_complete(uid)
        assert verdict is not None and verdict.state == "held"
        assert gate.file_messages(verdict) == 1
        queue = MessageQueue(journal)
        assert queue.next_batch("ris", 10) == []  # held: not eligible, like its images

        gate.release(uid, "technologist", False)
        (item,) = queue.next_batch("ris", 10)
        assert item.content["patient"]["PatientID"] == "SYNTH-0001"
        assert item.content["study"]["AccessionNumber"] == "ACC0001"
        assert item.content["verdict"]["series_uid"] == uid and not item.content["correction"]
        with journal.reading() as db:
            images = db.execute("SELECT DISTINCT destination FROM deliveries").fetchall()
        assert [r[0] for r in images] == ["local"]  # no images queued for the RIS

        queue.record([(item, Outcome(Kind.DELIVERED))])
        assert judge.deliveries(verdict).deliveries == {"local": "queued", "ris": "delivered"}
        gate.file_messages(verdict)  # a later verdict on the same series is a correction
        (again,) = queue.next_batch("ris", 10)
        assert again.content["correction"] is True
    finally:
        journal.close()
