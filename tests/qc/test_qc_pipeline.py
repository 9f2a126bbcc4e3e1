"""QC pipeline: protocol loading and matching, per-image measurement, series aggregation."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from agent.errors import ConfigError
from agent.operator.inspect import inspect_paths
from agent.qc.image_qc import ImageMeasurement, measure_file
from agent.qc.protocols import Protocols, load_protocols, match_protocol, parse_protocols
from agent.qc.series_qc import SeriesFacts, evaluate_series
from tests.support.qc_series import write_series

ROOT = Path(__file__).resolve().parents[2]
FACTS = SeriesFacts(study_uid="1.2", series_uid="1.2.3", modality="CT")


def real(name: str) -> Path:
    return Path(get_testdata_file(name, download=False))


@pytest.fixture(scope="module")
def protocols() -> Protocols:
    return load_protocols()


# -- protocols -------------------------------------------------------------------------------


def test_shipped_protocols_load_from_the_package_and_the_checkout(protocols: Protocols) -> None:
    assert protocols == load_protocols(ROOT / "config" / "qc-protocols.yaml")
    assert (ROOT / "agent" / "resources" / "qc-protocols.yaml").resolve() == (
        ROOT / "config" / "qc-protocols.yaml"
    )
    assert set(protocols.defaults) == {"CT", "MR", "DX"}
    assert protocols.defaults["DX"]["deviation_index_underexposure"].metric == "deviation_index"


BAD = {
    "protocols:\n- name: x\n  metrics:\n    ring_hu: {direction: high, warn: 9, fail: 8}\n": (
        "protocols[0].metrics.ring_hu: warn must not be above fail when direction is high"
    ),
    "protocols:\n- name: x\n  metrics:\n    snr: {direction: low, warn: 1, fail: 2}\n": (
        "protocols[0].metrics.snr: warn must not be below fail when direction is low"
    ),
    "protocols:\n- name: x\n  match: {modality: 'CT(', bodypart: HEAD}\n": (
        "protocols[0].match.modality: not a valid regular expression"
    ),
    "defaults:\n  CT:\n    ring_hu: {direction: up, warn: 1, fail: 2}\n": (
        "defaults.CT.ring_hu.direction: input should be 'high' or 'low'"
    ),
    "schema: other/2\n": "schema: input should be 'scanner-agent.qc-protocols/1'",
    "protocol: []\n": "protocol: unknown key",
    "- a list\n": "<root>: must be a mapping",
    "defaults: {CT: [\n": "<yaml>: line",
}


@pytest.mark.parametrize("text", list(BAD))
def test_protocol_errors_name_the_yaml_path(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_protocols(text, "p.yaml")
    assert info.value.source == "p.yaml"
    assert any(p.startswith(BAD[text]) for p in info.value.problems), info.value.problems
    if "bodypart" in text:
        assert "protocols[0].match.bodypart: unknown key" in info.value.problems


def test_missing_protocol_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_protocols(tmp_path / "none.yaml")


def test_check_config_validates_the_protocol_file(tmp_path: Path) -> None:
    bad = tmp_path / "qc.yaml"
    bad.write_text("defaults:\n  CT:\n    ring_hu: {direction: high, warn: 9, fail: 8}\n")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"qc: {{protocols: {bad}}}\n")
    run = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "-c", str(cfg)],
        capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, check=False,
    )  # fmt: skip
    assert run.returncode == 1
    assert str(bad) in run.stderr and "defaults.CT.ring_hu: warn must not be above" in run.stderr
    cfg.write_text("qc: {enabled: false, protocol: x}\n")
    run = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "-c", str(cfg)],
        capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, check=False,
    )  # fmt: skip
    assert run.returncode == 1 and "qc.protocol: unknown key" in run.stderr


def test_match_protocol(protocols: Protocols) -> None:
    def name(*facts: str) -> str | None:
        p = match_protocol(protocols, *facts)
        return p.name if p else None

    assert name("CT", "head", "5/5mm Plain") == "head-ct"
    assert name("CT", "", "") == "default-CT"
    assert name("CT", "CHEST", "") == "default-CT"
    assert name("CR", "CHEST", "PA") == "chest-cr-dx"
    assert name("DX", "HAND", "") == "default-DX"
    assert name("CR", "", "") == "default-DX"
    assert name("MR", "KNEE", "") == "default-MR"
    assert name("PT", "", "") is None


# -- measurement -----------------------------------------------------------------------------


def test_measure_real_ct() -> None:
    m = measure_file(real("693_UNCI.dcm"))
    assert m.error is None and m.modality == "CT" and len(m.frames) == 1
    assert m.sop_instance_uid and m.series_uid
    assert {"ring_hu", "noise_hu", "motion_streak_hu", "air_hu_error"} <= set(m.metrics)
    assert -1010 < m.metrics["air_hu"] < -960  # HU after the modality LUT, not stored values


def test_measure_real_mr_uses_the_phase_encode_tag(tmp_path: Path) -> None:
    m = measure_file(real("MR2_UNCI.dcm"))
    assert m.error is None and m.modality == "MR"
    assert all(math.isfinite(m.metrics[k]) for k in ("ghost_ratio", "snr", "zipper_z", "efc"))
    ds = pydicom.dcmread(real("MR2_UNCI.dcm"))
    del ds.InPlanePhaseEncodingDirection
    ds.save_as(tmp_path / "nope.dcm")
    m2 = measure_file(tmp_path / "nope.dcm")
    assert m2.error is None and math.isnan(m2.metrics["ghost_ratio"])
    assert m2.metrics["efc"] == pytest.approx(m.metrics["efc"])


def test_measure_real_cr_with_exposure_tags(tmp_path: Path) -> None:
    m = measure_file(real("RG1_UNCI.dcm"))
    assert m.error is None and m.modality == "CR"
    assert math.isnan(m.metrics["deviation_index"])  # the file carries no EI tags
    assert math.isfinite(m.metrics["sharpness"]) and math.isfinite(m.metrics["saturation_fraction"])
    ds = pydicom.dcmread(real("RG1_UNCI.dcm"))
    ds.ExposureIndex, ds.TargetExposureIndex = 800, 400
    ds.save_as(tmp_path / "ei.dcm")
    assert measure_file(tmp_path / "ei.dcm").metrics["deviation_index"] == pytest.approx(3.0103)


def test_bad_images_give_an_error_not_an_exception(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 50)
    assert measure_file(junk).error
    assert measure_file(tmp_path / "missing.dcm").error
    ds = pydicom.dcmread(real("693_UNCI.dcm"))
    ds.PixelData = ds.PixelData[:1000]
    ds.save_as(tmp_path / "short.dcm")
    m = measure_file(tmp_path / "short.dcm")
    assert m.error and m.modality == "CT" and m.sop_instance_uid == ds.SOPInstanceUID


# -- series ----------------------------------------------------------------------------------


def test_clean_generated_series_passes(tmp_path: Path, protocols: Protocols) -> None:
    write_series(tmp_path, "clean", 0)
    (v,), unreadable = inspect_paths([tmp_path], protocols)
    assert unreadable == []
    assert v.qc.status == "pass", v.qc.reasons
    assert v.instances == 4 and v.qc.metrics["images_measured"] == 4


@pytest.mark.parametrize(("artifact", "code"), [("ring", "ring_hu"), ("hu_offset", "air_hu_error")])
def test_severely_corrupted_series_fails(
    tmp_path: Path, protocols: Protocols, artifact: str, code: str
) -> None:
    write_series(tmp_path, artifact, 3)
    (v,), _ = inspect_paths([tmp_path], protocols)
    assert v.qc.status == "fail"
    reason = next(r for r in v.qc.reasons if r.code == code)
    assert isinstance(reason.value, float) and isinstance(reason.threshold, float)
    assert reason.value >= reason.threshold
    assert v.qc.metrics[f"{code}.fail_fraction"] == 1.0


def _slices(values: list[float], key: str = "ring_z") -> list[ImageMeasurement]:
    # ring_z: the measured metric of the ring_hu protocol entry (rings in noise units)
    return [ImageMeasurement(str(i), "1.2.3", "CT", ({key: v},)) for i, v in enumerate(values)]


def test_aggregation_rule(protocols: Protocols) -> None:
    head = match_protocol(protocols, "CT", "HEAD", "")
    ring = protocols.defaults["CT"]["ring_hu"]
    clean, bad = ring.warn / 2, ring.fail * 3
    assert evaluate_series(_slices([clean] * 300), head, FACTS).status == "pass"
    one = evaluate_series(_slices([clean] * 299 + [bad]), head, FACTS)
    assert one.status == "warn" and one.reasons[0].code == "ring_hu"
    many = evaluate_series(_slices([clean] * 270 + [bad] * 30), head, FACTS)
    assert many.status == "fail" and many.reasons[0].threshold == ring.fail
    assert many.metrics["ring_hu.fail_fraction"] == pytest.approx(0.1)
    assert many.metrics["ring_hu.worst"] == bad
    nan = evaluate_series(_slices([math.nan] * 299 + [bad]), head, FACTS)
    assert nan.status == "fail"  # unmeasurable slices are left out, not counted as passing


def test_low_direction_and_measurement_errors(protocols: Protocols) -> None:
    mr = match_protocol(protocols, "MR", "", "")
    snr = protocols.defaults["MR"]["snr"]
    low = evaluate_series(_slices([snr.fail - 1] * 3, "snr"), mr, FACTS)
    assert low.status == "fail" and low.reasons[0].code == "snr"
    broken = [ImageMeasurement("9", "1.2.3", "MR", error="ValueError: bad")]
    qc = evaluate_series(_slices([snr.warn + 5] * 3, "snr") + broken, mr, FACTS)
    assert qc.status == "warn" and [r.code for r in qc.reasons] == ["measurement_error"]
    assert evaluate_series(broken, None, FACTS).status == "warn"
    assert evaluate_series(_slices([1.0]), None, FACTS).status == "pass"
