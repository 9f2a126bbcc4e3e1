"""Where the other graded metrics saw their artifact (agent.qc.locate), and the windows, on
corpus images with the artifact made where it arises."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from agent.qc.locate import Arc, Circle, locate, metal_circle, truncation_arc, wrap_edges
from agent.web.key_image import QC_COLOUR, KeyImageRenderer
from agent.web.regions import apply_window, window_name
from kernels.qc import ct_metrics, mr_metrics
from kernels.qc.mr import otsu
from tests.support import corpus
from tests.support import corpus_ct as K
from tests.support.corpus import CT_PARAMS
from tests.support.qc_series import write_series
from tests.web.key_image_series import outline_pixels, store_series


def test_truncation_arc_lies_where_the_body_is_cut() -> None:
    s = K.ct_slice(CT_PARAMS[0], "truncation", 3, 0)  # the head shifted out to the right
    assert ct_metrics(s.hu, s.spacing)["truncation_fraction"] > 0.05
    arc = truncation_arc(s.hu, s.spacing)
    assert isinstance(arc, Arc)
    mid = math.radians((arc.start + arc.end) / 2)
    assert abs(math.degrees(math.atan2(math.sin(mid), math.cos(mid)))) < 45, arc  # +x: right
    angles = np.radians(np.linspace(arc.start, arc.end, 50))
    ys = np.round(arc.cy + (arc.r - 3) * np.sin(angles)).astype(int)
    xs = np.round(arc.cx + (arc.r - 3) * np.cos(angles)).astype(int)
    assert (s.hu[ys, xs] > -500).mean() > 0.9, "tissue along the arc"
    clean = K.ct_slice(CT_PARAMS[0], "clean", 0, 0)
    assert truncation_arc(clean.hu, clean.spacing) is None


def test_wrap_edges_are_the_folded_phase_encode_edges() -> None:
    sample = corpus.mr_sample(0, "wrap", 3, 0)
    pe = int(sample.meta["pe_axis"])
    assert mr_metrics(sample.image, pe)["wrap_fraction"] > 0.2
    edges = wrap_edges(sample.image, pe)
    assert edges is not None
    n = sample.image.shape[pe]
    lo, hi = edges
    start, end = (lo.y0, hi.y1) if pe == 0 else (lo.x0, hi.x1)
    assert start == 0 and end == n - 1, "one band at each end of the phase-encode axis"
    t = 0.5 * otsu(sample.image)
    for box in edges:
        part = sample.image[int(box.y0) : int(box.y1) + 1, int(box.x0) : int(box.x1) + 1]
        assert part.mean() > t, "signal folded into the band"


def test_metal_circle_is_on_the_metal() -> None:
    s = K.ct_slice(CT_PARAMS[0], "metal", 3, 0)
    c = metal_circle(s.hu, s.spacing)
    assert isinstance(c, Circle)
    ys, xs = np.nonzero(s.hu > 3000)
    # the metric reads streaks about the metal's centroid (two discs: between them)
    assert abs(c.cy - ys.mean()) < 1 and abs(c.cx - xs.mean()) < 1
    assert np.hypot(ys - c.cy, xs - c.cx).max() < c.r, "every piece of metal inside"
    assert locate("noise_lf_hu", s.hu, s.spacing) == [], "noise has no place"


def test_windows_by_modality_and_body_part() -> None:
    assert window_name("CT", "HEAD", "") == "brain"
    assert window_name("CT", "", "Routine BRAIN 5mm") == "brain"
    assert window_name("CT", "CHEST", "LUNG 1mm") == "lung"
    assert window_name("CT", "CHEST", "Mediastinum") == "soft tissue"
    assert window_name("CT", "ABDOMEN", "") == "soft tissue"
    assert (
        window_name("MR", "HEAD", "") == "percentile"
        and window_name("DX", "CHEST", "") == "percentile"
    )
    hu = np.array([[-1000.0, 0.0, 40.0, 80.0, 1000.0]], np.float32)
    assert apply_window(hu, "brain").tolist() == [[0, 0, 127, 255, 255]]
    assert apply_window(hu, "lung")[0, 0] > 0 and apply_window(hu, "lung")[0, 4] == 255
    mr = np.linspace(0, 1000, 10000, dtype=np.float32).reshape(100, 100)
    grey = apply_window(mr, "percentile")
    assert grey.min() == 0 and grey.max() == 255 and abs(float(np.median(grey)) - 127) < 2


def test_a_clean_series_shows_its_middle_slice_with_nothing_outlined(tmp_path: Path) -> None:
    verdict = store_series(tmp_path / "state", write_series(tmp_path / "files", "clean", 0, n=3))
    assert verdict.qc.status == "pass"
    png = KeyImageRenderer(tmp_path / "state").key_image(verdict.series_uid)
    assert png is not None and len(outline_pixels(png, QC_COLOUR)[0]) == 0
