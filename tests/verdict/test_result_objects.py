"""Every result object the agent emits for one series (QC report, triage report, key-image
KOS, rejection KOS) is valid for dicom3tools, agrees with its source series on patient and
study, and uses one private coding scheme."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from agent.domain.results import SCHEME
from agent.domain.verdicts import QC, Finding, Reason, Triage
from agent.qc.sr import qc_sr
from agent.triage.sr import triage_sr
from agent.verdict.results import SeriesSources, key_images, rejection_note
from tests.support.dicom3tools import assert_valid

# Patient and study attributes a real CT carries; every result must repeat them exactly.
CONTEXT = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
           "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
           "StudyDescription", "PatientAge", "PatientWeight", "StudyInstanceUID")  # fmt: skip


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Dataset]]:
    """Four slices of pydicom's real CT_small.dcm, one series, with rich patient data."""
    path = get_testdata_file("CT_small.dcm", download=False)
    assert path is not None, "pydicom's test files are missing"
    folder = tmp_path_factory.mktemp("ct")
    files = []
    series_uid = generate_uid()
    for i in range(4):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.StudyDescription, ds.PatientAge, ds.PatientWeight = "CT HEAD", "045Y", 72
        ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "Doe^Jane", "7", "A-17"
        ds.BodyPartExamined = "HEAD"
        files.append(folder / f"ct{i}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    return files, [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


def _sources(headers: list[Dataset]) -> SeriesSources:
    """The series as the judge sees it: the first header and the journal's instances."""
    return SeriesSources(headers[0], tuple((str(h.SOPClassUID), str(h.SOPInstanceUID))
                                           for h in headers))  # fmt: skip


def _results(headers: list[Dataset]) -> dict[str, Dataset]:
    uids = [str(h.SOPInstanceUID) for h in headers]
    sources = _sources(headers)
    pairs = list(sources.instances)
    qc = QC("fail", (Reason("ring_hu", "ring_hu: 2 of 4 images >= fail", 9.5, 5.0),),
            {"ring_hu.worst": 9.5, "ring_hu.fail_fraction": 0.5})  # fmt: skip
    triage = Triage("stat", (Finding("haemorrhage", 0.97, "stat", "ich@0.1.0", (uids[2],), 0.4),),
                    models=("ich@0.1.0",))  # fmt: skip
    worst = {"ring_hu": [uids[1]]}
    kos = key_images(qc, worst, triage, sources)
    assert kos is not None
    return {
        "qc": qc_sr(qc, headers[0], pairs, worst=worst),
        "triage": triage_sr(triage, headers[0], pairs),
        "key images": kos,
        "rejection": rejection_note(sources, "tech-anna"),
    }


def _designators(ds: Dataset) -> set[str]:
    return {str(e.value) for e in ds.iterall() if e.keyword == "CodingSchemeDesignator"}


def test_every_result_object_passes_dciodvfy_and_dcentvfy(
    series: tuple[list[Path], list[Dataset]], tmp_path: Path
) -> None:
    files, headers = series
    for name, ds in _results(headers).items():
        out = tmp_path / f"{name.replace(' ', '_')}.dcm"
        ds.save_as(out, enforce_file_format=True)
        assert_valid(out, files)


def test_one_context_and_one_private_scheme(series: tuple[list[Path], list[Dataset]]) -> None:
    _, headers = series
    src = headers[0]
    for name, ds in _results(headers).items():
        assert src.PatientBirthDate == "" and src.StudyTime, "a Type 2 value left empty, one set"
        for keyword in CONTEXT:
            assert (ds.get(keyword) or "") == (src.get(keyword) or ""), f"{name}: {keyword}"
        private = {d for d in _designators(ds) if d.startswith("99")}
        assert private <= {SCHEME}, f"{name}: {private}"
        assert [c.CodingSchemeDesignator for c in ds.CodingSchemeIdentificationSequence] == [SCHEME]


def _selected(kos: Dataset) -> list[str]:
    return [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            for i in kos.ContentSequence if i.ValueType == "IMAGE"]  # fmt: skip


def test_key_images_are_the_worst_qc_image_and_the_finding_slices(
    series: tuple[list[Path], list[Dataset]],
) -> None:
    _, headers = series
    kos = _results(headers)["key images"]
    title = kos.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator) == ("113000", "DCM")  # Of Interest
    assert _selected(kos) == [headers[1].SOPInstanceUID, headers[2].SOPInstanceUID]
    assert kos.Modality == "KO" and kos.SeriesInstanceUID != headers[0].SeriesInstanceUID
    nothing = key_images(QC("pass"), {}, Triage("routine"), _sources(headers))
    assert nothing is None, "nothing stands out"


def test_rejection_note_is_iocm_rejected_for_quality_reasons(
    series: tuple[list[Path], list[Dataset]],
) -> None:
    _, headers = series
    kos = rejection_note(_sources(headers), "tech-anna")
    title = kos.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == (
        "113001", "DCM", "Rejected for Quality Reasons",
    )  # fmt: skip
    assert _selected(kos) == [h.SOPInstanceUID for h in headers], "the whole series"
    refs = kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert refs.SeriesInstanceUID == headers[0].SeriesInstanceUID
    again = rejection_note(_sources(headers), "tech-anna")
    assert again.SOPInstanceUID == kos.SOPInstanceUID, "one rejection note per series"
    with pytest.raises(ValueError, match="no stored instance"):
        rejection_note(SeriesSources(headers[0], ()), "tech-anna")


def test_kos_of_a_series_missing_type2_attributes(
    series: tuple[list[Path], list[Dataset]], tmp_path: Path
) -> None:
    """Scanners omit Type 2 attributes; highdicom reads them from what a KOS references, so
    a missing PatientBirthDate must not lose the KOS (the objects write them empty)."""
    _, headers = series
    bare = []
    for h in headers:
        copy = Dataset()
        copy.update(h)
        for keyword in ("PatientBirthDate", "PatientSex", "StudyTime", "StudyID",
                        "ReferringPhysicianName", "AccessionNumber"):  # fmt: skip
            delattr(copy, keyword)
        bare.append(copy)
    qc = QC("fail", (Reason("ring_hu", "ring", 9.5, 5.0),))
    worst = {"ring_hu": [str(bare[0].SOPInstanceUID)]}
    for name, kos in (("key", key_images(qc, worst, None, _sources(bare))),
                      ("rejection", rejection_note(_sources(bare), "tech"))):  # fmt: skip
        assert kos is not None
        out = tmp_path / f"{name}.dcm"
        kos.save_as(out, enforce_file_format=True)
        assert pydicom.dcmread(out).PatientBirthDate == ""
        assert_valid(out, [])
