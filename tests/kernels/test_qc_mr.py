"""MR QC metrics against the labelled corpus and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from agent.qc.protocols import load_protocols
from kernels.qc import mr as qmr
from tests.support import corpus as C

# the shipped MR thresholds (config/qc-protocols.yaml): the metrics QC really grades
SHIPPED = load_protocols().defaults["MR"]
# artifact -> (metric, +1 if higher is worse, -1 if lower is worse), as the protocol grades it
RESPONDS = {
    artifact: (metric, 1 if SHIPPED[metric].direction == "high" else -1)
    for artifact, metric in {
        "ghosting": "ghost_ratio", "motion": "pe_artifact_ratio", "zipper": "zipper_z",
        "noise": "snr",
        "wrap": "wrap_fraction",
    }.items()
}  # fmt: skip


@pytest.fixture(scope="module")
def measured() -> dict[tuple[int, str, int], dict[str, float]]:
    out = {}
    for src in (0, 1):
        for art in ("clean", *RESPONDS, "spike"):
            for sev in (0,) if art == "clean" else (1, 2, 3):
                s = C.mr_sample(src, art, sev, seed=0)
                out[(src, art, sev)] = qmr.mr_metrics(s.image, s.meta["pe_axis"])
    return out


@pytest.mark.parametrize(("src", "artifact"), [(s, a) for s in (0, 1) for a in RESPONDS])
def test_metric_grades_its_artifact(measured, src: int, artifact: str) -> None:
    key, sign = RESPONDS[artifact]
    v = [sign * measured[(src, "clean", 0)][key]]
    v += [sign * measured[(src, artifact, s)][key] for s in (1, 2, 3)]
    assert v[0] < v[2] and v[0] < v[3], (key, v)
    assert v[3] >= v[1], (key, v)


def test_spike_peak_flags_spikes_on_both_sources(measured) -> None:
    """Moderate and severe spikes (5% and 25% of the DC sample) reach the shipped fail level
    of the spike_z entry (metric spike_peak) on the real head and on the Shepp-Logan
    phantom, whose bright outline hid them before the object was tapered off; clean images
    of both stay below warn."""
    thr = SHIPPED["spike_z"]
    assert thr.metric == "spike_peak"
    for src in (0, 1):
        assert thr.level(measured[(src, "clean", 0)]["spike_peak"]) == 0
        assert all(thr.level(measured[(src, "spike", s)]["spike_peak"]) == 2 for s in (2, 3))


@pytest.mark.parametrize("src", [0, 1])
def test_spike_made_in_a_smaller_matrix_is_seen(src: int) -> None:
    """The held-out corpus's 3/4 matrix: the spike is made in that matrix's own k-space."""
    thr = SHIPPED["spike_z"]
    clean = C.mr_sample(src, "clean", 0, seed=5, scale=0.75)
    spike = C.mr_sample(src, "spike", 2, seed=5, scale=0.75)
    assert clean.image.shape == tuple(round(0.75 * n) for n in C.mr_sources()[src][1].shape)
    assert thr.level(qmr.spike_peak(clean.image)) == 0
    assert thr.level(qmr.spike_peak(spike.image)) == 2


def test_spike_peak_is_not_measurable_on_a_constant_image() -> None:
    """A blank or saturated frame has no k-space beyond DC: NaN, not a made-up peak."""
    for value in (0.0, 7.0, 65535.0):
        assert np.isnan(qmr.spike_peak(np.full((128, 128), value)))


def test_clean_images_stay_low(measured) -> None:
    for src in (0, 1):
        m = measured[(src, "clean", 0)]
        assert m["ghost_ratio"] < 0.05 and m["wrap_fraction"] < 0.01 and m["zipper_z"] < 6.0, m
        failing = {
            k: m[t.metric or k] for k, t in SHIPPED.items() if t.level(m[t.metric or k]) == 2
        }
        assert failing == {}, f"source {src}: a clean image at a shipped fail level"


def test_pe_axis_from_tag() -> None:
    assert qmr.pe_axis_from_tag("COL") == 0 and qmr.pe_axis_from_tag("row") == 1
    with pytest.raises(ValueError):
        qmr.pe_axis_from_tag("OTHER")


def test_dietrich_snr_of_pure_rayleigh_air() -> None:
    rng = np.random.default_rng(0)
    img = np.abs(rng.normal(0, 10, (256, 256)) + 1j * rng.normal(0, 10, (256, 256)))
    img[64:192, 64:192] = 500.0 + rng.normal(0, 10, (128, 128))
    assert qmr.snr_dietrich(img) == pytest.approx(50.0, rel=0.1)  # 500 / sigma 10


@pytest.mark.parametrize("bad", [np.zeros((0, 0)), np.zeros((8, 8, 2)), np.full((32, 32), np.nan)])
def test_bad_input_raises(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        qmr.mr_metrics(bad, 0)


def test_bad_pe_axis_raises() -> None:
    with pytest.raises(ValueError):
        qmr.mr_metrics(np.ones((32, 32)), 2)
