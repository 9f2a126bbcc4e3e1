"""The QC result as a Comprehensive SR: valid, readable back, referencing its sources."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ComprehensiveSRStorage

from agent.domain.verdicts import QC
from agent.operator.inspect import inspect_paths
from agent.qc.protocols import load_protocols
from agent.qc.sr import qc_sr, sanitised_header
from tests.support.qc_series import write_series


def _name(item: pydicom.Dataset) -> str:
    """A content item's concept code value (long metric names use LongCodeValue)."""
    c = item.ConceptNameCodeSequence[0]
    return str(c.get("CodeValue") or c.get("LongCodeValue"))


@pytest.fixture(scope="module")
def failed(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], object]:
    folder = tmp_path_factory.mktemp("ring")
    files = write_series(folder, "ring", 3, n=3)
    (verdict,), _ = inspect_paths([folder], load_protocols())
    assert verdict.qc.status == "fail"
    return files, verdict


def test_sr_round_trip_and_references(failed: tuple[list[Path], object], tmp_path: Path) -> None:
    files, verdict = failed
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    qc = verdict.qc  # type: ignore[attr-defined]
    sr = qc_sr(qc, sources, protocol="head-ct")
    out = tmp_path / "qc.dcm"
    sr.save_as(out, enforce_file_format=True)

    ds = pydicom.dcmread(out)
    src = sources[0]
    assert ds.SOPClassUID == ComprehensiveSRStorage and ds.Modality == "SR"
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.PatientID == src.PatientID
    assert ds.SeriesInstanceUID not in {s.SeriesInstanceUID for s in sources}
    evidence = {
        i.ReferencedSOPInstanceUID
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        if series.SeriesInstanceUID == src.SeriesInstanceUID
        for i in series.ReferencedSOPSequence
    }
    assert evidence == {s.SOPInstanceUID for s in sources}

    back = hd.sr.srread(out)
    assert isinstance(back, hd.sr.ComprehensiveSR)
    items = back.ContentSequence
    status = next(i for i in items if _name(i) == "QCSTATUS")
    assert status.ConceptCodeSequence[0].CodeValue == "QCFAIL"
    images = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in items
              if i.ValueType == "IMAGE"}  # fmt: skip
    assert images == evidence
    reasons = [i for i in items if _name(i) == "QCREASON"]
    ring = next(
        r for r in reasons if any(c.get("TextValue") == "ring_hu" for c in r.ContentSequence)
    )
    nums = {_name(c): float(c.MeasuredValueSequence[0].NumericValue)
            for c in ring.ContentSequence if c.ValueType == "NUM"}  # fmt: skip
    expected = next(r for r in qc.reasons if r.code == "ring_hu")
    assert nums["QCVALUE"] == pytest.approx(expected.value, rel=1e-6)
    assert nums["QCTHRESHOLD"] == pytest.approx(expected.threshold)
    metrics = {_name(i): float(i.MeasuredValueSequence[0].NumericValue)
               for i in items if i.ValueType == "NUM"}  # fmt: skip
    assert metrics["ring_hu.fail_fraction"] == 1.0
    assert metrics["ring_hu.worst"] == pytest.approx(qc.metrics["ring_hu.worst"], rel=1e-6)


def test_sr_is_valid_for_dcmtk(failed: tuple[list[Path], object], tmp_path: Path) -> None:
    dsrdump = shutil.which("dsrdump")
    assert dsrdump, "dcmtk's dsrdump is missing: apt-get install -y dcmtk"
    files, verdict = failed
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    out = tmp_path / "qc.dcm"
    qc_sr(verdict.qc, sources).save_as(out, enforce_file_format=True)  # type: ignore[attr-defined]
    run = subprocess.run([dsrdump, str(out)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "E:" not in run.stderr and "W:" not in run.stderr, run.stderr
    assert 'CODE:(,,"QC status")=(QCFAIL' in run.stdout


def test_sr_needs_one_series(failed: tuple[list[Path], object]) -> None:
    files, verdict = failed
    with pytest.raises(ValueError, match="at least one"):
        qc_sr(verdict.qc, [])  # type: ignore[attr-defined]
    a = pydicom.dcmread(files[0], stop_before_pixels=True)
    b = pydicom.dcmread(files[1], stop_before_pixels=True)
    b.SeriesInstanceUID = "1.2.3"
    with pytest.raises(ValueError, match="one series"):
        qc_sr(verdict.qc, [a, b])  # type: ignore[attr-defined]


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
    with caplog.at_level("WARNING", logger="agent.qc.sr"):
        sr = qc_sr(QC("pass"), [src])
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
    assert qc_sr(QC("pass"), [src]).StudyTime is None
