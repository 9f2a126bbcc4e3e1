"""Triage inference on real and synthetic images, and its failure modes (never an exception)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread

from agent.config import parse_config
from agent.domain.verdicts import Finding, Triage
from agent.triage.engine import SeriesTriage, TriageEngine, preprocess
from agent.triage.models import load_model
from agent.triage.scoring import SliceScores, priority_for, series_triage, severity_for
from agent.triage.sessions import infer_slices
from agent.triage.sr import triage_sr
from models.phantoms import head_slice
from tests.support.dicom_factory import real_file
from tests.support.triage_helpers import SHIPPED, copy_model, ct_dataset, head_header


@functools.cache
def shipped_engine(cache: str) -> TriageEngine:
    cfg = parse_config("triage: {device: cpu}").triage
    return TriageEngine.start(cfg, Path(cache))


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> TriageEngine:
    return shipped_engine(str(tmp_path_factory.mktemp("ortcache")))


def runner(engine: TriageEngine, name: str) -> Any:
    return next(r for r in engine.runners if r.name == name)


def test_session_options_and_cache(engine: TriageEngine, tmp_path: Path) -> None:
    r = runner(engine, "ich")
    assert r.provider == "CPUExecutionProvider"
    cached = list(Path(tmp_path.parent).glob("ortcache*/ich-*.onnx"))
    assert cached, "the optimised graph is saved once in the cache folder"
    again = TriageEngine.start(parse_config("triage: {device: cpu}").triage, cached[0].parent)
    assert {x.name for x in again.runners} == {x.name for x in engine.runners}


def test_real_ct_is_preprocessed_and_scored(engine: TriageEngine) -> None:
    ds = dcmread(real_file("693_UNCI.dcm"))  # a real axial head CT slice
    r = runner(engine, "ich")
    x = preprocess(ds, r.model)
    assert x.shape == (1, 3, 128, 128) and x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    scores = infer_slices(r, [x, x])
    assert scores.shape == (2, 1) and np.all((scores >= 0) & (scores <= 1))
    body = infer_slices(runner(engine, "bodypart"), [preprocess(ds, runner(engine, "bodypart").model)])
    assert body.shape == (1, 4) and abs(float(body.sum()) - 1) < 1e-4
    enhanced = dcmread(real_file("eCT_Supplemental.dcm"))  # 2 frames, rescale in functional groups
    assert preprocess(enhanced, r.model).shape == (2, 3, 128, 128)
    compressed = dcmread(real_file("693_J2KI.dcm"))  # JPEG 2000: decoded by pylibjpeg
    assert infer_slices(r, [preprocess(compressed, r.model)]).shape == (1, 1)


def test_real_mr_path(tmp_path: Path) -> None:
    folder = copy_model("mr_mean", tmp_path)
    cfg = parse_config(f"triage: {{models_dir: {folder.parent}, device: auto}}").triage
    eng = TriageEngine.start(cfg, None)
    for name in ("MR_small.dcm", "MR2_UNCI.dcm", "emri_small.dcm"):  # emri: 10 frames
        ds = dcmread(real_file(name))
        x = preprocess(ds, eng.runners[0].model)
        assert x.shape[1:] == (1, 64, 64) and abs(float(x.mean())) < 0.2
        acc = eng.series()
        acc.add(ds)
        triage = acc.result()
        assert triage is not None and triage.status == "ok" and triage.findings[0].label == "brightness"


def head_series(lesion: str | None, n: int, seed: int, body_part: str = "HEAD") -> list[Any]:
    rng = np.random.default_rng(seed)
    hdr = head_header(body_part)
    return [ct_dataset(head_slice(rng, lesion if i in (n // 2, n // 2 + 1) else None), hdr, i)
            for i in range(n)]


def test_lesion_scores_higher_than_no_lesion(engine: TriageEngine) -> None:
    r = runner(engine, "ich")
    wins = 0
    for seed in range(8):
        with_ = infer_slices(r, [preprocess(d, r.model) for d in head_series("intraparenchymal", 2, seed)])
        without = infer_slices(r, [preprocess(d, r.model) for d in head_series(None, 2, seed)])
        wins += float(with_.max()) > float(without.max())
    assert wins >= 6


def test_series_triage_names_the_slices(engine: TriageEngine) -> None:
    series = head_series("epidural", 8, seed=3)
    acc = engine.series()
    for ds in series:
        acc.add(ds)
    triage = acc.result()
    assert triage is not None and triage.status == "ok"
    (finding,) = triage.findings
    assert finding.label == "haemorrhage" and finding.model.startswith("ich@")
    lesion_uids = {series[4].SOPInstanceUID, series[5].SOPInstanceUID}
    assert len(finding.slices) == 1 and set(finding.slices) & lesion_uids  # max: the top slice
    assert triage.priority in ("urgent", "stat") and triage.priority == priority_for(triage)
    assert triage.body_part is not None and triage.body_part.predicted == "HEAD"
    assert triage.body_part.agrees is True and not triage.body_part.enriched
    doc = triage.to_dict()
    assert doc["findings"][0]["slices"] and doc["status"] == "ok"
    assert acc.header is not None and "PixelData" not in acc.header
    assert [u for _, u in acc.instances] == [ds.SOPInstanceUID for ds in series]
    sr = triage_sr(triage, acc.header, acc.instances)
    report = hd.sr.ComprehensiveSR.from_dataset(sr).content  # read back as TID 1500
    (group,) = [g for g in report.get_image_measurement_groups() if g.source_images]
    assert {i.referenced_sop_instance_uid for i in group.source_images} == set(finding.slices)


def test_body_part_enrichment_when_missing_or_contradicted(engine: TriageEngine) -> None:
    for header, agrees in (("", None), ("CHEST", False)):
        acc = engine.series()
        series = head_series(None, 4, seed=5, body_part=header)
        for ds in series:
            ds.SeriesDescription = "HEAD ROUTINE"
            acc.add(ds)
        triage = acc.result()
        assert triage is not None and triage.body_part is not None
        call = triage.body_part
        assert call.predicted == "HEAD" and call.agrees is agrees and call.enriched
        assert call.header == header


def test_no_model_applies() -> None:
    eng = shipped_engine_cpu()
    acc = eng.series()
    acc.add(dcmread(real_file("RG1_UNCI.dcm")))  # CR: no shipped model
    assert acc.result() is None


@functools.cache
def shipped_engine_cpu() -> TriageEngine:
    return TriageEngine.start(parse_config("triage: {device: cpu}").triage, None)


class Broken:
    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA error: device lost")


def test_a_model_that_throws_makes_triage_unavailable() -> None:
    eng = TriageEngine.start(parse_config("triage: {device: cpu}").triage, None)
    ich = runner(eng, "ich")
    ich.session = Broken()
    acc = SeriesTriage(eng.runners)
    for ds in head_series("subdural", 3, seed=1):
        acc.add(ds)  # must not raise
    triage = acc.result()
    assert triage is not None and triage.status == "unavailable"
    assert "ich: RuntimeError: CUDA error: device lost" in triage.reasons[0]
    assert triage.findings == () and triage.priority == "routine"
    assert triage.body_part is not None  # the other model still answered


def test_unreadable_pixels_make_triage_unavailable() -> None:
    eng = shipped_engine_cpu()
    ds = head_series(None, 1, seed=2)[0]
    ds.PixelData = b"\0\1\2"  # truncated
    acc = eng.series()
    acc.add(ds)
    triage = acc.result()
    assert triage is not None and triage.status == "unavailable" and len(triage.reasons) == 2


def test_gpu_absent_falls_back_to_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import onnxruntime as ort

    # The box may have CUDA: hide it, as onnxruntime without the gpu extra would.
    cpu_only = [p for p in ort.get_available_providers() if p != "CUDAExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: cpu_only)
    folder = copy_model("mr_mean", tmp_path)
    cfg = parse_config(f"triage: {{models_dir: {folder.parent}, device: cuda}}").triage
    with caplog.at_level("WARNING", logger="agent.triage.engine"):
        eng = TriageEngine.start(cfg, tmp_path / "cache")
    assert eng.runners[0].session.get_providers() == ["CPUExecutionProvider"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["triage.device is cuda but onnxruntime has no CUDA provider; using the CPU"]


def test_priority_and_severity_helpers() -> None:
    ich = load_model(SHIPPED / "ich")
    th = ich.manifest.thresholds["haemorrhage"]
    uids = [f"1.2.3.{i}" for i in range(4)]
    scores = [np.array([v], np.float32) for v in (0.0, th.stat + 0.001, 1.0, 0.1)]
    triage = series_triage(ich, [SliceScores(u, s) for u, s in zip(uids, scores, strict=True)])
    assert triage.priority == "stat" and severity_for(priority_for(triage)) == "critical"
    assert set(triage.findings[0].slices) == {"1.2.3.2"}  # max: the top slice
    assert priority_for(None) == "routine" and severity_for("urgent") == "warning"
    assert priority_for(Triage("routine", (Finding("x", 0.6, "urgent"),))) == "urgent"


def test_triage_alert() -> None:
    from agent.domain.verdicts import QC, Verdict
    from agent.triage.scoring import triage_alert

    base = Verdict("1.2", "1.2.3", "CT", 40, "complete", QC("pass"))
    stat = Triage("stat", (Finding("haemorrhage", 0.97, "stat", "ich@0.2.0", ("1.2.3.4",), 0.4),))
    from dataclasses import replace

    alert = triage_alert(replace(base, triage=stat))
    assert alert is not None and alert.kind == "triage" and alert.severity == "critical"
    assert alert.action == "review" and alert.reasons[0].code == "triage.haemorrhage"
    down = Triage("routine", status="unavailable", reasons=("ich: RuntimeError: x",))
    alert = triage_alert(replace(base, triage=down))
    assert alert is not None and alert.severity == "warning" and alert.action == "none"
    assert triage_alert(replace(base, triage=Triage("routine"))) is None
    assert triage_alert(base) is None
