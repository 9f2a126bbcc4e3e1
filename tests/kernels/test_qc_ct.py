"""CT QC metrics on FBP-reconstructed slices (tests/support/corpus_ct.py) and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.qc.protocols import load_protocols
from kernels.qc import ct as qct
from kernels.qc import ct_metrics, ct_ring
from tests.support import corpus_ct as K

# artifact -> the metric that must grade it (higher = worse for all of these)
RESPONDS = {
    "ring": "ring_z",
    "motion": "motion_streak_hu",
    "metal": "metal_streak_hu",
    "low_dose": "noise_lf_hu",
    "truncation": "truncation_fraction",
    "hu_offset": "air_hu_error",
}
# two acquisitions of the fit corpus: the real head at 256^2 (ramp, 12-bit, -3024 padding)
# and the abdomen phantom at 128^2 (hann, 16-bit, constant -1000 outside the circle)
PARAMS = (
    K.CTParams("head_693", 256, 1.0, "ramp", 12, -3024.0),
    K.CTParams("body_ph", 128, 1.0, "hann", 16, None),
)
# Known misses, kept visible: severe but below the shipped fail level on this acquisition.
# (The abdomen phantom's severe motion was one until motion_streak_hu compared air with its
# local median: the real head's holder plateaus no longer set the fail level.)
WEAK: dict[tuple[int, str], str] = {}
# the shipped CT thresholds (config/qc-protocols.yaml): a clean slice must fail none of them
SHIPPED = load_protocols().defaults["CT"]
NO_METAL = ("metal_area_mm2", "metal_streak_hu")  # a clean slice has none at all


@pytest.fixture(scope="module")
def measured() -> dict[tuple[int, str, int], dict[str, float]]:
    out = {}
    for src, p in enumerate(PARAMS):
        for art in ("clean", *K.ARTIFACTS):
            for sev in (0,) if art == "clean" else (1, 2, 3):
                s = K.ct_slice(p, art, sev, seed=0)
                out[(src, art, sev)] = ct_metrics(s.hu, s.spacing)
    return out


@pytest.mark.parametrize("src", [0, 1])
def test_clean_slices_stay_below_the_shipped_fail_levels(measured, src: int) -> None:
    m = measured[(src, "clean", 0)]
    graded = {t.metric or k for k, t in SHIPPED.items()}
    assert set(RESPONDS.values()) <= graded, "every graded metric has a threshold"
    failing = {k: m[t.metric or k] for k, t in SHIPPED.items() if t.level(m[t.metric or k]) == 2}
    assert failing == {}, "a clean slice at a shipped fail level: a QC false alarm"
    assert {k: m[k] for k in NO_METAL} == dict.fromkeys(NO_METAL, 0.0)


@pytest.mark.parametrize(("src", "artifact"), [(s, a) for s in (0, 1) for a in K.ARTIFACTS])
def test_metric_grades_its_artifact(measured, src: int, artifact: str) -> None:
    key = RESPONDS[artifact]
    vals = [measured[(src, "clean", 0)][key]] + [
        measured[(src, artifact, v)][key] for v in (1, 2, 3)
    ]
    assert all(math.isfinite(v) for v in vals), vals
    # mild may sit at the clean level; moderate and severe must climb above it. Severe may
    # saturate near moderate: 12-bit storage clips air at -1024 (air_hu_error stops at 24),
    # and ring_z levels off once rings dominate the spread over angles.
    assert vals[1] >= vals[0] - 0.1 * abs(vals[0]) - 1e-6, vals
    assert vals[0] < vals[2] and vals[0] < vals[3] and vals[3] >= 0.9 * vals[2], vals
    entry = next(k for k, t in SHIPPED.items() if (t.metric or k) == key)
    if (src, artifact) in WEAK:
        assert SHIPPED[entry].level(vals[3]) < 2, f"fixed? drop {(src, artifact)} from WEAK"
    else:
        assert SHIPPED[entry].level(vals[3]) == 2, f"severe {artifact} below the fail level"
    assert SHIPPED[entry].level(vals[0]) == 0, f"clean slice reaches {entry} warn"


@pytest.fixture(scope="module")
def abdomen() -> dict[tuple[str, int], dict[str, float]]:
    """The real abdomen (explicit_VR-UN) by FBP at 256^2: organ borders, fat, bowel gas."""
    p = K.CTParams("body_real", 256, 1.0, "hamming", 12, -3024.0)
    cases = [("clean", 0), ("low_dose", 2), ("truncation", 2)]
    return {(a, v): ct_metrics(K.ct_slice(p, a, v, 0).hu, K.ct_slice(p, a, v, 0).spacing)
            for a, v in cases}  # fmt: skip


def test_noise_lf_tracks_dose_not_anatomy_on_a_real_abdomen(abdomen) -> None:
    """A twelfth of the photons is sqrt(12) = 3.5x the quantum noise. Block differences that
    crossed organ borders read anatomy as noise (clean 14-21 HU, rising only a third at a
    twelfth of the dose); flat blocks read 5.3 and 12.7 here (x2.4: the source's own
    noise and some texture remain)."""
    clean, low = abdomen[("clean", 0)]["noise_lf_hu"], abdomen[("low_dose", 2)]["noise_lf_hu"]
    assert 2.0 < low / clean < 4.5, (clean, low)
    assert SHIPPED["noise_hu"].level(clean) == 0
    assert SHIPPED["noise_hu"].level(low) == 2


def test_noise_lf_does_not_depend_on_the_matrix() -> None:
    """The same dose at 128^2 and 320^2 (its photons shared over 180 and 384 views) reads
    about the same: the metric is noise at 3.5 mm, not per pixel."""
    vals = [
        ct_metrics(s.hu, s.spacing)["noise_lf_hu"]
        for n in (128, 320)
        for s in [K.ct_slice(K.CTParams("head_693", n, 1.0, "ramp", 16, -3024.0), "clean", 0, 1)]
    ]
    assert 0.7 < vals[0] / vals[1] < 1.4, vals


def test_truncation_cuts_the_patient_not_the_couch(abdomen) -> None:
    """The real abdomen's couch is wider than the patient: moderate truncation (12% of the
    patient outside the field) must cut the patient, and be seen."""
    assert SHIPPED["truncation_fraction"].level(abdomen[("clean", 0)]["truncation_fraction"]) == 0
    assert (
        SHIPPED["truncation_fraction"].level(abdomen[("truncation", 2)]["truncation_fraction"]) == 2
    )


def test_metal_area_only_with_metal(measured) -> None:
    assert measured[(0, "metal", 2)]["metal_area_mm2"] > 20.0
    assert measured[(0, "low_dose", 3)]["metal_area_mm2"] == 0.0


def test_air_reads_minus_1000_on_phantom(measured) -> None:
    assert abs(measured[(1, "clean", 0)]["air_hu"] + 1000.0) <= 3.0


def test_ring_z_does_not_grow_with_noise(measured) -> None:
    """ring_hu (HU) of a clean slice rises with its noise; ring_z (in noise units) does not."""
    clean, noisy = measured[(0, "clean", 0)], measured[(0, "low_dose", 3)]
    assert noisy["noise_hu"] > 4 * clean["noise_hu"]
    assert noisy["ring_z"] < SHIPPED["ring_hu"].warn and clean["ring_z"] < SHIPPED["ring_hu"].warn


def test_ring_centre_is_searched(monkeypatch: pytest.MonkeyPatch) -> None:
    """The corpus's rotation axis is pixel N/2 (scikit-image's radon), half a pixel off the
    image centre (N - 1)/2. About the image centre a ring drifts across its own 2-3 px width
    with angle: moderate rings on the real head at 512^2 read 3.9-4.5 noise units, under the
    fail level. The half-pixel search finds the axis, and the ring reads 2x or more."""
    s = K.ct_slice(PARAMS[0], "ring", 2, seed=0)
    sc = qct.scene(s.hu, s.spacing)
    peak = ct_ring.ring_peak(sc)
    assert peak is not None and (peak.cy, peak.cx) == (128.0, 128.0)
    assert SHIPPED["ring_hu"].level(peak.z) == 2
    monkeypatch.setattr(ct_ring, "CENTRE_OFFSETS", (0.0,))
    fixed = ct_ring.ring_peak(sc)
    assert fixed is not None and (fixed.cy, fixed.cx) == (127.5, 127.5)
    assert fixed.z < peak.z / 2, (fixed.z, peak.z)


def test_standalone_metric_equals_shared_scene() -> None:
    s = K.ct_slice(PARAMS[0], "ring", 2, seed=0)
    all_m = ct_metrics(s.hu, s.spacing)
    assert qct.ring_z(s.hu, s.spacing) == pytest.approx(all_m["ring_z"])
    assert qct.noise_hu(s.hu, s.spacing) == pytest.approx(all_m["noise_hu"])
    assert qct.noise_lf_hu(s.hu, s.spacing) == pytest.approx(all_m["noise_lf_hu"])


def test_square_fov_without_padding_truncation_not_measurable() -> None:
    """A square image with tissue at its edge is a targeted reconstruction or a crop: the
    scan field's edge is not in the image, so truncation cannot be judged (NaN)."""
    rng = np.random.default_rng(0)
    img = rng.normal(-1000.0, 5.0, (128, 128)).astype(np.float32)
    img[40:90, :] = 40.0  # a slab running off both sides
    assert math.isnan(qct.truncation_fraction(img, 1.0))


def test_constant_air_padding_is_found() -> None:
    """Padding by a constant air value (-1000 outside the circle) still marks the FOV."""
    s = K.ct_slice(PARAMS[1], "truncation", 3, seed=0)
    assert qct.scene(s.hu, s.spacing).fov_radius < 64.0
    assert qct.truncation_fraction(s.hu, s.spacing) > SHIPPED["truncation_fraction"].fail


@pytest.mark.parametrize(
    "bad",
    [np.zeros((0, 0), np.float32), np.zeros((4, 4, 3)), np.zeros(64), np.full((32, 32), np.nan)],
)
def test_bad_input_raises(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        ct_metrics(bad, 0.5)


@pytest.mark.parametrize("spacing", [0.0, -1.0, float("nan"), (1.0, 2.0, 3.0)])
def test_bad_spacing_raises(spacing: object) -> None:
    with pytest.raises(ValueError):
        ct_metrics(np.zeros((32, 32), np.float32), spacing)
