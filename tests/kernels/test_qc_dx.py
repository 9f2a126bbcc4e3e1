"""DX/CR QC metrics: DI formula, corpus grading, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernels.qc import dx as qdx
from tests.support import corpus as C

RESPONDS = {
    "overexposure": ("deviation_index", 1),
    "underexposure": ("deviation_index", -1),
    "saturation": ("saturation_fraction", 1),
    "collimation": ("collimation_fraction", 1),
    "motion": ("sharpness", -1),
}


@pytest.fixture(scope="module")
def measured() -> dict[tuple[str, int], dict[str, float]]:
    out = {}
    for art in ("clean", *RESPONDS):
        for sev in (0,) if art == "clean" else (1, 2, 3):
            s = C.dx_sample(art, sev, seed=0)
            out[(art, sev)] = qdx.dx_metrics(s.image, s.meta["tags"])
    return out


@pytest.mark.parametrize("artifact", list(RESPONDS))
def test_metric_grades_its_artifact(measured, artifact: str) -> None:
    key, sign = RESPONDS[artifact]
    v = [sign * measured[("clean", 0)][key]] + [
        sign * measured[(artifact, s)][key] for s in (1, 2, 3)
    ]
    assert v[0] < v[1] < v[2] < v[3], (key, v)


def test_clean_stays_low(measured) -> None:
    m = measured[("clean", 0)]
    assert abs(m["deviation_index"]) < 1.0
    assert m["saturation_fraction"] < 0.001 and m["collimation_fraction"] < 0.03


@pytest.mark.parametrize(("ei", "eit"), [(400.0, 400.0), (800.0, 400.0), (123.0, 456.0)])
def test_deviation_index_formula_exact(ei: float, eit: float) -> None:
    assert qdx.deviation_index({"ExposureIndex": ei, "TargetExposureIndex": eit}) == (
        10.0 * math.log10(ei / eit)
    )
    assert qdx.deviation_index({0x00181411: ei, (0x0018, 0x1412): eit}) == 10.0 * math.log10(
        ei / eit
    )


def test_deviation_index_tag_wins_and_missing_is_nan() -> None:
    assert (
        qdx.deviation_index({"DeviationIndex": 1.5, "ExposureIndex": 1, "TargetExposureIndex": 9})
        == 1.5
    )
    assert math.isnan(qdx.deviation_index({}))
    assert math.isnan(qdx.deviation_index({"ExposureIndex": 100.0, "TargetExposureIndex": 0.0}))


@pytest.mark.parametrize("bad", [np.zeros((0, 0)), np.zeros((8, 8, 2)), np.full((64, 64), np.inf)])
def test_bad_input_raises(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        qdx.dx_metrics(bad, {})
