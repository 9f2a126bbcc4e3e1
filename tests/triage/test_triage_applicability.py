"""Out-of-distribution input never gets a triage priority: a model scores only what its
manifest's ``gate`` says it was made for, and says why it did not score the rest."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from agent.config import parse_config
from agent.domain.verdicts import QC, Triage, Verdict
from agent.triage.applicability import body_part_reason, header_reason, pixel_reason
from agent.triage.engine import TriageEngine
from agent.triage.models import GateSpec, load_model
from agent.triage.scoring import triage_alert
from models.phantoms import body_slice, head_slice
from tests.support.dicom_factory import real_file
from tests.support.triage_helpers import SHIPPED, ct_dataset, head_header

ICH_GATE = load_model(SHIPPED / "ich").manifest.gate


@functools.cache
def engine() -> TriageEngine:
    return TriageEngine.start(parse_config("triage: {device: cpu}").triage, None)


def _triage(slices: list[np.ndarray], hdr: Dataset, **tags: object) -> Triage:
    acc = engine().series()
    for i, hu in enumerate(slices):
        ds = ct_dataset(hu, hdr, i)
        for key, value in tags.items():
            setattr(ds, key, value)
        acc.add(ds)
    result = acc.result()
    assert result is not None, "the head-CT model applies by its tags"
    return result


def _ich_reasons(t: Triage) -> list[str]:
    return [r for r in t.reasons if r.startswith("ich")]


def _no_alert(t: Triage) -> bool:
    verdict = Verdict(study_uid="1", series_uid="2", modality="CT", state="complete", instances=1,
                      qc=QC("pass"), triage=t)  # fmt: skip
    return triage_alert(verdict) is None


def test_a_normal_head_series_is_scored() -> None:
    rng = np.random.default_rng(3)
    t = _triage([head_slice(rng) for _ in range(4)], head_header())
    assert t.status == "ok" and [f.label for f in t.findings] == ["haemorrhage"]
    assert not _ich_reasons(t)


def test_a_tiny_head_series_is_not_applicable() -> None:
    rng = np.random.default_rng(4)
    tiny = [head_slice(rng, "intraparenchymal")[::4, ::4] for _ in range(4)]  # 32 x 32
    t = _triage(tiny, head_header())
    assert (t.status, t.priority, t.findings) == ("not_applicable", "routine", ())
    assert any("matrix 32x32 below 128x128" in r for r in _ich_reasons(t)), t.reasons
    assert _no_alert(t)


def test_a_localizer_labelled_head_is_not_applicable() -> None:
    rng = np.random.default_rng(5)
    t = _triage([head_slice(rng, "epidural")], head_header(),
                ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])  # fmt: skip
    assert (t.status, t.priority, t.findings) == ("not_applicable", "routine", ())
    assert any("LOCALIZER" in r for r in _ich_reasons(t)), t.reasons


def test_a_chest_labelled_head_is_vetoed_by_the_body_part_model() -> None:
    rng = np.random.default_rng(6)
    t = _triage([body_slice(rng, "CHEST") for _ in range(6)], head_header())
    assert t.body_part is not None and t.body_part.predicted == "CHEST", t.body_part
    assert (t.status, t.priority, t.findings) == ("not_applicable", "routine", ())
    assert any("body-part model calls the series CHEST" in r for r in _ich_reasons(t))
    assert _no_alert(t)


def test_a_head_without_air_has_a_wrong_rescale() -> None:
    """Stored values read as HU without their intercept: air at 0, brain at about 1060."""
    rng = np.random.default_rng(7)
    t = _triage([head_slice(rng) + 1024 for _ in range(3)], head_header())
    assert t.status == "not_applicable"
    assert any("no air" in r for r in _ich_reasons(t)), t.reasons


def test_the_colour_head_screenshots_in_deid_data_are_not_applicable() -> None:
    import deid_data

    files = sorted((Path(deid_data.__file__).parent / "data" / "humans").glob("ctbrain*.dcm"))
    assert files, "deid-data ships two CT brain screen captures: pip install deid-data"
    acc = engine().series()
    for f in files:
        acc.add(dcmread(f))
    t = acc.result()
    assert t is not None and t.status == "not_applicable", t
    assert any("colour image" in r for r in t.reasons)


@pytest.mark.parametrize("name", ["693_UNCI.dcm", "J2K_pixelrep_mismatch.dcm"])
def test_real_head_slices_pass_the_gate(name: str) -> None:
    ds = dcmread(real_file(name))
    assert header_reason(ICH_GATE, ds) is None
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert pixel_reason(ICH_GATE, hu) is None


def test_gate_checks_one_by_one() -> None:
    rng = np.random.default_rng(8)
    ds = ct_dataset(head_slice(rng), head_header(), 0)
    assert header_reason(ICH_GATE, ds) is None
    ds.Modality = "MR"
    assert header_reason(ICH_GATE, ds) == "modality MR is not CT"
    ds.Modality = "CT"
    ds.PixelSpacing = [0.1, 0.1]  # 128 columns: a 13 mm field of view
    assert header_reason(ICH_GATE, ds) == "field of view 13 mm outside 100..500 mm"
    del ds.PixelSpacing
    assert "no usable PixelSpacing" in (header_reason(ICH_GATE, ds) or "")
    assert pixel_reason(ICH_GATE, np.full((64, 64), -3024, np.float32)) is not None
    hot = np.full((64, 64), 4000, np.float32)
    hot[:8] = -1000
    assert "99th percentile 4000 HU" in (pixel_reason(ICH_GATE, hot) or "")
    assert pixel_reason(GateSpec(), hot) is None, "no pixel rule, no pixel reason"


def test_body_part_veto_needs_a_confident_other_call() -> None:
    from agent.domain.verdicts import BodyPartCall

    head = BodyPartCall("HEAD", "HEAD", 0.98, True)
    unsure = BodyPartCall("HEAD", "", 0.41, None)
    chest = BodyPartCall("HEAD", "CHEST", 0.93, False)
    assert body_part_reason(ICH_GATE, head) is None
    assert body_part_reason(ICH_GATE, unsure) is None
    assert body_part_reason(ICH_GATE, None) is None
    assert "CHEST (0.93), not HEAD" in (body_part_reason(ICH_GATE, chest) or "")


def _untagged() -> Dataset:
    hdr = head_header(body_part="")
    hdr.SeriesDescription = "AXIAL 5mm"  # neither the body part nor the description says head
    return hdr


def test_an_untagged_head_is_scored_on_the_body_part_models_call() -> None:
    rng = np.random.default_rng(9)
    t = _triage_any([head_slice(rng) for _ in range(4)], _untagged())
    assert t.body_part is not None and t.body_part.predicted == "HEAD"
    assert [f.label for f in t.findings] == ["haemorrhage"], t
    assert any("applied by the body-part model" in r for r in _ich_reasons(t))


def test_an_untagged_chest_gets_no_head_model() -> None:
    rng = np.random.default_rng(10)
    t = _triage_any([body_slice(rng, "CHEST") for _ in range(4)], _untagged())
    assert t.body_part is not None and t.body_part.predicted == "CHEST"
    assert (t.status, t.findings, _ich_reasons(t)) == ("ok", (), [])
    assert not any(m.startswith("ich") for m in t.models)


def _triage_any(slices: list[np.ndarray], hdr: Dataset) -> Triage:
    acc = engine().series()
    for i, hu in enumerate(slices):
        acc.add(ct_dataset(hu, hdr, i))
    result = acc.result()
    assert result is not None, "the body-part model applies to every CT"
    return result
