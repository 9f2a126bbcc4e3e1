"""The per-pixel bleed target of ich 0.5's training (``ScanHead.bleed_mask``, ``coarse_mask``).

The mask must sit where the bleed changed the slice (flipped with it), and recording it must
not change the slices existing callers get (same seed, same pixels).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from models.ich.data import MASK_SIDE, UNKNOWN, coarse_mask
from models.phantoms import ICH_KINDS, Acquisition, ScanHead, draw_bleed


def _render(seed: int, kind: str, level: float) -> tuple[np.ndarray, np.ndarray, ScanHead]:
    """The same head and scan, noise-free, without and with the bleed (no streaks, smooth
    kernel: those draw after the bleed, which takes draws of its own)."""
    acq = Acquisition(small=0.0, streaks=0.0, sharp=0.0)
    bleed = draw_bleed(np.random.default_rng(seed + 1), acq, kind)
    plain = ScanHead(np.random.default_rng(seed), acq).render(level, None, noise=False)
    head = ScanHead(np.random.default_rng(seed), acq)
    return plain, head.render(level, bleed, noise=False), head


def test_mask_covers_what_the_bleed_changed() -> None:
    levels = {"intraventricular": 0.5, "subarachnoid": 0.3}
    for i, kind in enumerate(ICH_KINDS * 2):
        plain, bled, head = _render(100 + i, kind, levels.get(kind, 0.6))
        assert head.bleed_mask is not None and head.bleed_mask.shape == bled.shape
        changed = np.abs(bled - plain) > 15
        if not changed.any():
            continue  # (the subarachnoid sector may miss this level's sulci)
        inside = ndimage.binary_dilation(head.bleed_mask > 0.05, iterations=2)  # kernel blur
        assert changed[inside].sum() >= 0.9 * changed.sum(), (kind, head.flip)
        cells = coarse_mask(head.bleed_mask)
        assert cells.shape == (MASK_SIDE, MASK_SIDE) and 0 < cells.sum() < cells.size / 4


def test_no_bleed_no_mask_and_same_pixels() -> None:
    a = ScanHead(np.random.default_rng(7))
    first = a.render(0.5)
    assert a.bleed_mask is None
    assert not coarse_mask(None).any()
    b = ScanHead(np.random.default_rng(7))
    b.render(0.5, draw_bleed(np.random.default_rng(8), Acquisition()))
    assert b.bleed_mask is not None
    b.render(0.5)  # a later render without a bleed forgets the last one
    assert b.bleed_mask is None
    again = ScanHead(np.random.default_rng(7)).render(0.5)
    assert np.array_equal(first, again)


def test_empty_shape_is_unknown_not_negative() -> None:
    assert (coarse_mask(np.zeros((128, 128), np.float32)) == UNKNOWN).all()
