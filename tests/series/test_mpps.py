"""MPPS: pynetdicom plays the modality (N-CREATE, C-STOREs, N-SET on one association) against
a real agent; COMPLETED completes the series while that association is still open."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    ModalityPerformedProcedureStep,
)

from agent.domain.procedures import PerformedSeries, ProcedureStep, StepStatus
from agent.journal import mpps_log
from agent.journal.database import Journal
from agent.operator.status import read_status
from tests.support.agent_proc import AgentProcess
from tests.support.dicom_factory import series_header, write_ct_series
from tests.support.peers import free_port

pytestmark = pytest.mark.integration

SERIES_SQL = "SELECT * FROM series"
MPPS = ModalityPerformedProcedureStep


def _done(rows: list[Any]) -> bool:
    return len(rows) == 1 and rows[0]["state"] in ("released", "forwarded")


def in_progress(study_uid: str, accession: str = "ACC0001") -> Dataset:
    ds = Dataset()
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.AccessionNumber = accession
    item.ScheduledProcedureStepID = "SPS1"
    item.RequestedProcedureID = "RP1"
    ds.ScheduledStepAttributesSequence = [item]
    ds.PatientName = "Synthetic^Patient"
    ds.PatientID = "SYNTH-0001"
    ds.Modality = "CT"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedProcedureStepStartDate = "20261201"
    ds.PerformedProcedureStepStartTime = "120000"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedSeriesSequence = []
    return ds


def final(status: str, series_uid: str, sop_uids: list[str]) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20261201"
    ds.PerformedProcedureStepEndTime = "121000"
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.ReferencedImageSequence = [_ref(uid) for uid in sop_uids]
    series.ReferencedNonImageCompositeSOPInstanceSequence = []
    ds.PerformedSeriesSequence = [series]
    if status == "DISCONTINUED":
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = "110514", "DCM"
        code.CodeMeaning = "Incorrect worklist entry selected"
        ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = [code]
    return ds


def _ref(uid: str) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = uid
    return ref


class Modality:
    """One association carrying MPPS and CT storage, as a scanner opens it."""

    def __init__(self, port: int) -> None:
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(MPPS)
        self.assoc = ae.associate("127.0.0.1", port, ae_title="EDGE")
        assert self.assoc.is_established

    def create(self, ds: Dataset, uid: str) -> int:
        status, _ = self.assoc.send_n_create(ds, MPPS, uid)
        return int(status.Status)

    def set(self, ds: Dataset, uid: str) -> int:
        status, _ = self.assoc.send_n_set(ds, MPPS, uid)
        return int(status.Status)

    def store(self, files: list[Path]) -> None:
        for f in files:
            assert int(self.assoc.send_c_store(f).Status) == 0

    def release(self) -> None:
        self.assoc.release()


def uids_of(files: list[Path]) -> tuple[str, str, list[str]]:
    first = dcmread(files[0], stop_before_pixels=True)
    sops = [str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    return str(first.StudyInstanceUID), str(first.SeriesInstanceUID), sops


@pytest.fixture
def ct_files(tmp_path: Path) -> list[Path]:
    return write_ct_series(tmp_path / "s", 10, header=series_header())


@pytest.mark.parametrize("processes", [1, 2], ids=["in-daemon", "2-receive-processes"])
def test_completed_completes_the_series_while_the_association_is_open(
    agent_factory: type[AgentProcess], ct_files: list[Path], processes: int
) -> None:
    # with 2 receive processes the MPPS SCP runs in the worker that took the association
    agent = agent_factory(series={"grace_s": 5}, dicom={"receive_processes": processes}).start()
    study, series, sops = uids_of(ct_files)
    mpps_uid = generate_uid()
    scanner = Modality(agent.port)
    assert scanner.create(in_progress(study), mpps_uid) == 0
    scanner.store(ct_files)
    agent.wait_for(SERIES_SQL, lambda r: len(r) == 1 and r[0]["state"] == "receiving")
    status = read_status(agent.storage / "journal.sqlite", ["local"])
    assert status["procedures"]["steps"] == {"acquiring": 1}
    assert status["procedures"]["acquiring_series"] == [series]

    assert scanner.set(final("COMPLETED", series, sops), mpps_uid) == 0
    (row,) = agent.wait_for(SERIES_SQL, _done, 20)
    assert scanner.assoc.is_established, "completed while the association is still open"
    assert row["completion_reason"] == "mpps"
    scanner.release()
    status = read_status(agent.storage / "journal.sqlite", ["local"])
    assert status["procedures"]["steps"] == {"completed": 1}
    assert status["procedures"]["acquiring_series"] == []


def test_missing_instances_are_named_after_grace_and_complete_on_arrival(
    agent: AgentProcess, ct_files: list[Path]
) -> None:
    study, series, sops = uids_of(ct_files)
    mpps_uid = generate_uid()
    scanner = Modality(agent.port)
    assert scanner.create(in_progress(study), mpps_uid) == 0
    scanner.store(ct_files[:8])
    assert scanner.set(final("COMPLETED", series, sops), mpps_uid) == 0
    scanner.release()
    agent.wait_for_log("system alert mpps.missing")
    line = next(x for x in agent.log().splitlines() if "mpps.missing" in x)
    assert "2 have not arrived" in line and sops[8] in line and sops[9] in line
    later = Modality(agent.port)
    later.store(ct_files[8:])
    (row,) = agent.wait_for(SERIES_SQL, _done, 20)
    later.release()
    # the release of the first association did not complete it: one completion, by MPPS
    assert (row["completion_reason"], row["completions"], row["amendments"]) == ("mpps", 1, 0)


def test_discontinued_raises_an_alert(agent: AgentProcess, ct_files: list[Path]) -> None:
    study, series, sops = uids_of(ct_files)
    mpps_uid = generate_uid()
    scanner = Modality(agent.port)
    assert scanner.create(in_progress(study), mpps_uid) == 0
    scanner.store(ct_files[:3])
    assert scanner.set(final("DISCONTINUED", series, sops[:3]), mpps_uid) == 0
    scanner.release()
    agent.wait_for_log("system alert mpps.discontinued")
    feed = (agent.storage / "feed.jsonl").read_text()
    alerts = [json.loads(x) for x in feed.splitlines() if "mpps.discontinued" in x]
    (reason,) = alerts[0]["payload"]["reasons"]
    assert mpps_uid in reason["message"] and "Incorrect worklist entry" in reason["message"]


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI", "ignore:The value length")
def test_hostile_mpps_is_refused_with_a_status(agent: AgentProcess) -> None:
    scanner = Modality(agent.port)
    bad = in_progress(generate_uid())
    bad.ScheduledStepAttributesSequence[0].StudyInstanceUID = "1.2\n3"
    assert scanner.create(bad, generate_uid()) == 0x0106
    long_uid = in_progress("1." + "2" * 70)
    assert scanner.create(long_uid, generate_uid()) == 0x0106
    done_at_once = in_progress(generate_uid())
    done_at_once.PerformedProcedureStepStatus = "COMPLETED"
    assert scanner.create(done_at_once, generate_uid()) == 0x0106
    many = in_progress(generate_uid())
    many.PerformedSeriesSequence = [Dataset() for _ in range(1001)]
    for item in many.PerformedSeriesSequence:
        item.SeriesInstanceUID = generate_uid()
    assert scanner.create(many, generate_uid()) == 0x0213
    assert scanner.set(final("COMPLETED", generate_uid(), []), generate_uid()) == 0x0112
    uid = generate_uid()
    assert scanner.create(in_progress(generate_uid()), uid) == 0
    assert scanner.create(in_progress(generate_uid()), uid) == 0x0111
    assert scanner.set(final("COMPLETED", generate_uid(), []), uid) == 0
    assert scanner.set(final("DISCONTINUED", generate_uid(), []), uid) == 0xC310
    scanner.release()
    assert agent.query("SELECT status FROM mpps")[0][0] == "COMPLETED"
    assert len(agent.query("SELECT * FROM mpps")) == 1, "refused messages leave nothing"


class Ris:
    """A pynetdicom MPPS SCP standing in for the RIS: records what it is sent, in order."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.got: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        self.server: Any = None

    def start(self) -> Ris:
        ae = AE(ae_title="RIS")
        ae.add_supported_context(MPPS)
        handlers = [(evt.EVT_N_CREATE, self._create), (evt.EVT_N_SET, self._set)]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self

    def _create(self, event: Any) -> tuple[int, Dataset]:
        ds = event.attribute_list
        with self.lock:
            self.got.append(("create", str(event.request.AffectedSOPInstanceUID),
                             str(ds.PerformedProcedureStepStatus)))  # fmt: skip
        return 0x0000, ds

    def _set(self, event: Any) -> tuple[int, Dataset]:
        ds = event.modification_list
        with self.lock:
            self.got.append(("set", str(event.request.RequestedSOPInstanceUID),
                             str(ds.PerformedProcedureStepStatus)))  # fmt: skip
        return 0x0000, ds

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


@pytest.fixture
def ris() -> Iterator[Ris]:
    server = Ris(free_port())
    yield server
    server.stop()


def test_forwarded_in_order_once_the_ris_comes_up(
    agent_factory: type[AgentProcess], ris: Ris, ct_files: list[Path]
) -> None:
    """The RIS is down while the modality reports: both messages wait in the journal and
    reach it, in order, once it listens."""
    agent = agent_factory(mpps={"forward_to": [{"ae_title": "RIS", "host": "127.0.0.1",
                                                "port": ris.port}],
                                "retry_initial_s": 0.2, "retry_max_s": 0.5}).start()  # fmt: skip
    study, series, sops = uids_of(ct_files)
    uid = generate_uid()
    scanner = Modality(agent.port)
    assert scanner.create(in_progress(study), uid) == 0
    scanner.store(ct_files)
    assert scanner.set(final("COMPLETED", series, sops), uid) == 0
    scanner.release()
    agent.wait_for_log("MPPS to RIS: no association")
    ris.start()
    agent.wait_for("SELECT state FROM mpps_outbox",
                   lambda rows: len(rows) == 2 and {r[0] for r in rows} == {"delivered"})  # fmt: skip
    assert ris.got == [("create", uid, "IN PROGRESS"), ("set", uid, "COMPLETED")]


def test_finished_steps_are_pruned_after_a_month(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.sqlite")
    old, live = generate_uid(), generate_uid()
    series = (PerformedSeries("1.2.3", frozenset({"1.2.3.1"})),)
    with journal.transaction() as db:
        mpps_log.save(db, ProcedureStep(old, StepStatus.COMPLETED, series=series), b"", "set",
                      b"", ["ris"])  # fmt: skip
        mpps_log.save(db, ProcedureStep(live, StepStatus.IN_PROGRESS), b"", "create", b"", [])
        db.execute("UPDATE mpps SET updated_at = updated_at - ?", (mpps_log.KEEP_S + 60,))
        db.execute("UPDATE mpps_outbox SET state = 'delivered', updated_at = 0")
        mpps_log.prune(db, time.time())
        left = [r[0] for r in db.execute("SELECT sop_instance_uid FROM mpps")]
        refs = db.execute("SELECT COUNT(*) FROM mpps_refs").fetchone()[0]
        outbox = db.execute("SELECT COUNT(*) FROM mpps_outbox").fetchone()[0]
    journal.close()
    assert (left, refs, outbox) == ([live], 0, 0), "an IN PROGRESS step is never pruned"


def test_a_completed_step_survives_kill9(agent: AgentProcess, ct_files: list[Path]) -> None:
    """COMPLETED is journaled before it is answered: after kill -9 the restarted agent still
    completes the series by MPPS the moment its last listed instances arrive."""
    study, series, sops = uids_of(ct_files)
    uid = generate_uid()
    scanner = Modality(agent.port)
    assert scanner.create(in_progress(study), uid) == 0
    scanner.store(ct_files[:7])
    assert scanner.set(final("COMPLETED", series, sops), uid) == 0
    scanner.assoc.abort()  # an abort proves nothing: the series stays open
    agent.kill9()
    agent.start()
    later = Modality(agent.port)
    later.store(ct_files[7:])
    (row,) = agent.wait_for(SERIES_SQL, _done, 20)
    assert later.assoc.is_established
    later.release()
    assert row["completion_reason"] == "mpps"
