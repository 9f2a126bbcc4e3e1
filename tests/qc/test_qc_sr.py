"""The QC result as a TID 1500 Measurement Report: valid for dicom3tools, readable back by\nhighdicom and dcmtk, referencing its sources and each reason's worst image."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ComprehensiveSRStorage

from agent.domain.results import SCHEME
from agent.domain.verdicts import QC
from agent.operator.inspect import inspect_paths
from agent.qc.image_qc import measure_file
from agent.qc.protocols import Protocol, load_protocols, match_protocol
from agent.qc.sr import qc_sr, sanitised_header, worst_images
from tests.support.dicom3tools import assert_valid
from tests.support.qc_series import write_series

QUALITY = hd.sr.CodedConcept("111101", "DCM", "Image Quality")


@pytest.fixture(scope="module")
def failed(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], object]:
    folder = tmp_path_factory.mktemp("ring")
    files = write_series(folder, "ring", 3, n=3)
    (verdict,), _ = inspect_paths([folder], load_protocols())
    assert verdict.qc.status == "fail"
    return files, verdict


def _protocol(ds: pydicom.Dataset) -> Protocol | None:
    """The protocol inspect matched for the series: the one that names its metric keys."""
    return match_protocol(load_protocols(), ds.Modality, ds.get("BodyPartExamined", ""),
                          ds.get("SeriesDescription", ""))  # fmt: skip


def _report(failed: tuple[list[Path], object], out: Path) -> tuple[list[pydicom.Dataset], QC]:
    files, verdict = failed
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    qc: QC = verdict.qc  # type: ignore[attr-defined]
    worst = worst_images(qc, [measure_file(p) for p in files], _protocol(sources[0]))
    pairs = [(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in sources]
    sr = qc_sr(qc, sources[0], pairs, protocol="head-ct", worst=worst)
    sr.save_as(out, enforce_file_format=True)
    return sources, qc


def test_qc_report_is_a_tid_1500_measurement_report(
    failed: tuple[list[Path], object], tmp_path: Path
) -> None:
    out = tmp_path / "qc.dcm"
    sources, qc = _report(failed, out)
    ds = pydicom.dcmread(out)
    src = sources[0]
    assert ds.SOPClassUID == ComprehensiveSRStorage and ds.Modality == "SR"
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert ds.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.PatientID == src.PatientID
    assert ds.SeriesInstanceUID not in {s.SeriesInstanceUID for s in sources}
    assert [s.CodingSchemeDesignator for s in ds.CodingSchemeIdentificationSequence] == [SCHEME]
    evidence = {
        i.ReferencedSOPInstanceUID
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        if series.SeriesInstanceUID == src.SeriesInstanceUID
        for i in series.ReferencedSOPSequence
    }
    assert evidence == {s.SOPInstanceUID for s in sources}

    report = hd.sr.srread(out).content
    (series,) = report.get_image_measurement_groups(finding_type=QUALITY)
    (status,) = series.get_qualitative_evaluations()
    assert (status.name.value, status.value.value) == ("130550", "RID14")  # non-diagnostic
    assert not series.source_images, "the series group applies to every evidence image"
    (library,) = [
        i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "111028"
    ]
    (group,) = library.ContentSequence  # TID 1600: one group, its shared descriptors once
    entries = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
               for i in group.ContentSequence if i.ValueType == "IMAGE"}  # fmt: skip
    assert entries == evidence
    (modality,) = [i for i in group.ContentSequence if i.ValueType == "CODE"]
    assert modality.ConceptCodeSequence[0].CodeValue == "CT"
    metrics = {m.name.value: (m.value, m.unit.value) for m in series.get_measurements()}
    assert metrics["ring_hu.fail_fraction"] == (1.0, "{ratio}")
    assert metrics["ring_hu.worst"][0] == pytest.approx(qc.metrics["ring_hu.worst"], rel=1e-6)
    assert metrics["ring_hu.worst"][1] == "[hnsf'U]"
    assert len(metrics) == sum(math.isfinite(v) for v in qc.metrics.values())


def test_each_reason_is_a_group_with_value_threshold_message_and_worst_image(
    failed: tuple[list[Path], object], tmp_path: Path
) -> None:
    out = tmp_path / "qc.dcm"
    sources, qc = _report(failed, out)
    expected = next(r for r in qc.reasons if r.code == "ring_hu")
    ring = hd.sr.CodedConcept("ring_hu", SCHEME, "ring_hu")
    (group,) = hd.sr.srread(out).content.get_image_measurement_groups(finding_type=ring)
    nums = {m.name.value: m.value for m in group.get_measurements()}
    assert nums["ring_hu"] == pytest.approx(expected.value, rel=1e-6)
    assert nums["THRESHOLD"] == pytest.approx(expected.threshold)
    texts = [i.TextValue for i in group[0].ContentSequence if i.ValueType == "TEXT"
             and i.ConceptNameCodeSequence[0].CodeValue == "121106"]  # fmt: skip
    assert texts == [expected.message]
    (worst,) = [i.referenced_sop_instance_uid for i in group.source_images]
    protocol = _protocol(sources[0])
    assert protocol is not None
    key = protocol.metric_key("ring_hu")
    ring_of = {m.sop_instance_uid: max(f[key] for f in m.frames)
               for m in (measure_file(p) for p in failed[0])}  # fmt: skip
    assert worst == max(ring_of, key=lambda uid: ring_of[uid]), "the worst image is referenced"


def test_qc_report_passes_dciodvfy_and_dcentvfy(
    failed: tuple[list[Path], object], tmp_path: Path
) -> None:
    out = tmp_path / "qc.dcm"
    _report(failed, out)
    assert_valid(out, failed[0])


def test_sr_is_readable_by_dcmtk(failed: tuple[list[Path], object], tmp_path: Path) -> None:
    dsrdump = shutil.which("dsrdump")
    assert dsrdump, "dcmtk's dsrdump is missing: apt-get install -y dcmtk"
    out = tmp_path / "qc.dcm"
    _report(failed, out)
    run = subprocess.run([dsrdump, str(out)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "E:" not in run.stderr, run.stderr
    assert '(,,"Imaging Series Quality")=(RID14,RADLEX,"Non-diagnostic quality")' in run.stdout


def test_sr_needs_a_source_image(failed: tuple[list[Path], object]) -> None:
    files, verdict = failed
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    with pytest.raises(ValueError, match="at least one"):
        qc_sr(verdict.qc, header, [])  # type: ignore[attr-defined]


def _pair(ds: pydicom.Dataset) -> list[tuple[str, str]]:
    return [(str(ds.SOPClassUID), str(ds.SOPInstanceUID))]


def _us_header() -> pydicom.Dataset:
    """A real ultrasound header (pydicom's test files) with StudyTime '14:04:38', StudyDate
    '1997.04.24': ACR-NEMA style values highdicom refuses."""
    path = get_testdata_file("ExplVR_BigEnd.dcm", download=False)
    assert path is not None, "pydicom's test files are missing"
    return pydicom.dcmread(path, stop_before_pixels=True)


def test_non_conformant_study_time_is_repaired_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = _us_header()
    assert (src.StudyTime, src.StudyDate) == ("14:04:38", "1997.04.24")
    with caplog.at_level("WARNING", logger="agent.domain.headers"):
        sr = qc_sr(QC("pass"), src, _pair(src))
    sr.save_as(tmp_path / "qc.dcm", enforce_file_format=True)
    back = pydicom.dcmread(tmp_path / "qc.dcm")
    assert (back.StudyTime, back.StudyDate) == ("140438", "19970424")
    assert back.StudyInstanceUID == src.StudyInstanceUID
    assert src.StudyTime == "14:04:38", "the source header itself is left as received"
    assert "StudyTime '14:04:38' -> '140438'" in caplog.text


def test_unrepairable_header_values_are_emptied() -> None:
    src = _us_header()
    src.StudyTime, src.StudyDate, src.PatientSex = "noon", "19971324", "MALE"
    repairs: set[str] = set()
    clean = sanitised_header(src, repairs)
    assert (clean.StudyTime, clean.StudyDate, clean.PatientSex) == (None, None, None)
    assert repairs == {
        "StudyTime 'noon' -> ''", "StudyDate '19971324' -> ''", "PatientSex 'MALE' -> ''",
    }  # fmt: skip
    assert qc_sr(QC("pass"), src, _pair(src)).StudyTime is None
