"""CT QC metrics against the labelled corpus (tests/corpus.py) and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.qc.protocols import load_protocols
from kernels.qc import ct as qct
from kernels.qc import ct_metrics
from tests.support import corpus as C

# artifact -> the metric that must grade it (higher = worse for all of these)
RESPONDS = {
    "ring": "ring_hu",
    "motion": "motion_streak_hu",
    "metal": "metal_streak_hu",
    "low_dose": "noise_hu",
    "truncation": "truncation_fraction",
    "hu_offset": "air_hu_error",
}
# the shipped CT thresholds (config/qc-protocols.yaml): a clean slice must fail none of them
SHIPPED = load_protocols().defaults["CT"]
NO_METAL = ("metal_area_mm2", "metal_streak_hu")  # a clean slice has none at all


@pytest.fixture(scope="module")
def measured() -> dict[tuple[int, str, int], dict[str, float]]:
    out = {}
    for src in (0, 1):
        for art in ("clean", *C.ct_artifacts(src)):
            for sev in (0,) if art == "clean" else (1, 2, 3):
                s = C.ct_sample(src, art, sev, seed=0)
                out[(src, art, sev)] = ct_metrics(s.image, s.meta["spacing"])
    return out


@pytest.mark.parametrize("src", [0, 1])
def test_clean_slices_stay_below_the_shipped_fail_levels(measured, src: int) -> None:
    m = measured[(src, "clean", 0)]
    assert set(RESPONDS.values()) <= set(SHIPPED), "every graded metric has a threshold"
    failing = {k: m[t.metric or k] for k, t in SHIPPED.items() if t.level(m[t.metric or k]) == 2}
    assert failing == {}, "a clean slice at a shipped fail level: a QC false alarm"
    assert {k: m[k] for k in NO_METAL} == dict.fromkeys(NO_METAL, 0.0)


@pytest.mark.parametrize(("src", "artifact"), [(s, a) for s in (0, 1) for a in C.ct_artifacts(s)])
def test_metric_grades_its_artifact(measured, src: int, artifact: str) -> None:
    key = RESPONDS[artifact]
    vals = [measured[(src, "clean", 0)][key]] + [
        measured[(src, artifact, v)][key] for v in (1, 2, 3)
    ]
    assert all(math.isfinite(v) for v in vals), vals
    # mild may sit at the clean level; moderate and severe must climb above it, in order
    assert vals[1] >= vals[0] - 0.1 * abs(vals[0]) - 1e-6, vals
    assert vals[0] < vals[2] < vals[3], vals


def test_metal_area_only_with_metal(measured) -> None:
    assert measured[(0, "metal", 2)]["metal_area_mm2"] > 20.0
    assert measured[(0, "low_dose", 3)]["metal_area_mm2"] == 0.0


def test_air_reads_minus_1000_on_phantom() -> None:
    s = C.ct_sample(1, "clean", 0, seed=0)
    assert abs(qct.air_hu(s.image, 0.5) + 1000.0) <= 3.0


def test_standalone_metric_equals_shared_scene() -> None:
    s = C.ct_sample(0, "ring", 2, seed=0)
    all_m = ct_metrics(s.image, s.meta["spacing"])
    assert qct.ring_hu(s.image, s.meta["spacing"]) == pytest.approx(all_m["ring_hu"])
    assert qct.noise_hu(s.image, s.meta["spacing"]) == pytest.approx(all_m["noise_hu"])


def test_square_fov_without_padding_measures_edge_truncation() -> None:
    img = np.full((128, 128), -1000.0, np.float32)
    img[40:90, :] = 40.0  # a slab running off both sides
    assert qct.truncation_fraction(img, 1.0) > 0.1
    img[40:90, :5] = -1000.0
    img[40:90, -5:] = -1000.0
    assert qct.truncation_fraction(img, 1.0) == 0.0


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
