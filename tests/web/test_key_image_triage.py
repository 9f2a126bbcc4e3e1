"""The key image of a bleed: the slice the ICH model scored highest, in the brain window, with
the region its score depends on outlined around the bleed. The heads are drawn by
models/phantoms.py with the bleed's mask kept, and scored by the shipped model through the
agent's own triage engine."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from agent.config import parse_config
from agent.triage.engine import TriageEngine
from agent.web.key_image import TRIAGE_COLOUR, KeyImageRenderer
from agent.web.regions import apply_window
from agent.web.regions_triage import Saliency
from models.phantoms import Head
from tests.support.triage_helpers import ct_dataset, head_header
from tests.web.key_image_series import outline_pixels, picture, store_series

BLEED_AT = 2  # of 5 slices


@functools.cache
def engine() -> TriageEngine:
    return TriageEngine.start(parse_config("triage: {device: cpu}").triage, None)


def bleed_series(seed: int) -> tuple[list[Dataset], NDArray[np.bool_]]:
    """Five head slices, an intraparenchymal bleed on one; the bleed's mask."""
    rng = np.random.default_rng(seed)
    header, slices, mask = head_header(), [], np.zeros((128, 128), bool)
    for i in range(5):
        head = Head(rng)
        if i == BLEED_AT:
            before = head.img.copy()
            head.add_lesion("intraparenchymal")
            mask = np.abs(head.img - before) > 5.0
        noisy = head.img + rng.normal(0.0, 3.0, head.img.shape).astype(np.float32)
        slices.append(ct_dataset(noisy, header, i))
    return slices, mask


@pytest.mark.parametrize("seed", [0, 3, 5, 6, 7, 10, 11])  # those the model flags
def test_bleed_is_outlined_on_its_slice(tmp_path: Path, seed: int) -> None:
    slices, mask = bleed_series(seed)
    acc = engine().series()
    for ds in slices:
        acc.add(ds)
    triage = acc.result()
    assert triage is not None and triage.priority in ("stat", "urgent"), triage
    verdict = store_series(tmp_path / "state", slices, triage=triage)
    png = KeyImageRenderer(tmp_path / "state").key_image(verdict.series_uid)
    assert png is not None
    grey = picture(png)
    assert grey.std() > 20, "not blank"
    scale = grey.shape[1] / 128
    ys, xs = outline_pixels(png, TRIAGE_COLOUR)
    y0, y1, x0, x1 = (v / scale for v in (ys.min(), ys.max(), xs.min(), xs.max()))
    my, mx = np.nonzero(mask)
    assert y0 <= my.mean() <= y1 and x0 <= mx.mean() <= x1, "the box holds the bleed"
    head = ct_pixels(slices[BLEED_AT]) > -500
    hy, hx = np.nonzero(head)
    head_area = (np.ptp(hy) + 1) * (np.ptp(hx) + 1)
    assert (y1 - y0 + 1) * (x1 - x0 + 1) < 0.15 * head_area, "the bleed, not the head"
    # the bleed's slice is shown, in the brain window: the picture is that slice, windowed
    small = grey.reshape(128, int(scale), 128, int(scale)).astype(np.float64).mean(axis=(1, 3))
    shown = [np.abs(small - apply_window(np.maximum(ct_pixels(ds), -1024), "brain"))[head].mean()
             for ds in slices]  # fmt: skip
    assert int(np.argmin(shown)) == BLEED_AT and shown[BLEED_AT] < 12, shown


def ct_pixels(ds: Dataset) -> NDArray[np.float32]:
    out: NDArray[np.float32] = ds.pixel_array.astype(np.float32) - 1024.0
    return out


def test_no_region_from_a_model_the_finding_did_not_name() -> None:
    slices, _ = bleed_series(0)
    saliency = Saliency()
    tag = next(r for r in engine().runners if r.name == "ich").model.tag  # the shipped version
    assert saliency.region(slices[BLEED_AT], 0, "ich@0.0.1", "haemorrhage") is None
    assert saliency.region(slices[BLEED_AT], 0, tag, "no-such-label") is None
    assert saliency.region(slices[BLEED_AT], 0, tag, "haemorrhage") is not None


def test_without_the_model_the_box_is_the_scored_slice(tmp_path: Path) -> None:
    slices, _ = bleed_series(0)
    acc = engine().series()
    for ds in slices:
        acc.add(ds)
    verdict = store_series(tmp_path / "state", slices, triage=acc.result())
    (tmp_path / "no-models").mkdir()  # the finding's model is not there to ask
    png = KeyImageRenderer(tmp_path / "state", models_dir=tmp_path / "no-models").key_image(
        verdict.series_uid
    )
    assert png is not None
    scale = picture(png).shape[1] / 128
    ys, xs = outline_pixels(png, TRIAGE_COLOUR)
    hy, hx = np.nonzero(ct_pixels(slices[BLEED_AT]) > -500)
    assert abs(ys.min() / scale - hy.min()) < 2 and abs(ys.max() / scale - hy.max()) < 2
    assert abs(xs.min() / scale - hx.min()) < 2 and abs(xs.max() / scale - hx.max()) < 2
