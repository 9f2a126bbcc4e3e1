"""Every QC metric on degenerate images is finite or NaN ("not measurable"), never inf or huge.

Constant, tiny (8x8), all-air and saturated images, for CT, MR and DX: a degenerate ratio
(a near-zero denominator, as zipper_z's 1e12 on a zeroed MR background) must not come out.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernels.qc import ct_metrics, dx_metrics, mr_metrics

LIMIT = 1e6  # no metric has a meaningful value this large


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 < 20**2
    half = np.zeros((64, 64), np.float32)
    half[:, 32:] = 1000.0  # half zeroed (a masked background), half constant
    return {
        "constant": np.full((64, 64), 40.0, np.float32),
        "zeros": np.zeros((64, 64), np.float32),
        "tiny": rng.normal(40.0, 5.0, (8, 8)).astype(np.float32),
        "tiny_constant": np.full((8, 8), 7.0, np.float32),
        "air": np.full((128, 128), -1000.0, np.float32),
        "air_noisy": rng.normal(-1000.0, 10.0, (128, 128)).astype(np.float32),
        "padded_air": np.where(disc, -1000.0, -3024.0).astype(np.float32),
        "saturated": np.full((64, 64), 4095.0, np.float32),
        "saturated_disc": np.where(disc, 4095.0, 0.0).astype(np.float32),
        "half_masked": half,
    }


IMAGES = _images()


def _check(metrics: dict[str, float]) -> None:
    bad = {k: v for k, v in metrics.items() if not (math.isnan(v) or abs(v) < LIMIT)}
    assert bad == {}, f"degenerate values: {bad}"


@pytest.mark.parametrize("name", list(IMAGES))
def test_ct_metrics_finite_or_nan(name: str) -> None:
    _check(ct_metrics(IMAGES[name], 0.7))


@pytest.mark.parametrize("name", list(IMAGES))
@pytest.mark.parametrize("pe_axis", [0, 1])
def test_mr_metrics_finite_or_nan(name: str, pe_axis: int) -> None:
    _check(mr_metrics(np.abs(IMAGES[name]), pe_axis))


@pytest.mark.parametrize("name", [n for n, v in IMAGES.items() if min(v.shape) >= 16])
def test_dx_metrics_finite_or_nan(name: str) -> None:
    tags = {"ExposureIndex": 400.0, "TargetExposureIndex": 400.0}
    _check(dx_metrics(np.abs(IMAGES[name]), tags))


def test_zeroed_mr_background_is_not_measurable_for_zipper() -> None:
    """The cause of zipper_z = 1e12: a background the scanner set to exactly 0."""
    rng = np.random.default_rng(1)
    img = np.zeros((128, 128), np.float32)
    img[32:96, 32:96] = rng.normal(500.0, 20.0, (64, 64))
    m = mr_metrics(img, 0)
    assert math.isnan(m["zipper_z"]) and math.isnan(m["snr"]) and math.isnan(m["fber"])


def test_ct_without_padding_measures_noise_and_air() -> None:
    """The cause of NaN noise/air/motion on FBP slices: no padding made the FOV radius inf,
    which the fastmath kernels cannot compare against."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:256, :256]
    body = (yy - 128) ** 2 + (xx - 128) ** 2 < 80**2
    img = np.where(body, 40.0, -1000.0) + rng.normal(0, 10.0, (256, 256))
    m = ct_metrics(img.astype(np.float32), 0.9)
    assert all(math.isfinite(m[k]) for k in ("noise_hu", "noise_lf_hu", "air_hu", "ring_z")), m
    assert abs(m["air_hu"] + 1000.0) < 5.0 and 5.0 < m["noise_hu"] < 15.0
    assert math.isnan(m["truncation_fraction"])  # square field: scan FOV edge not in the image
