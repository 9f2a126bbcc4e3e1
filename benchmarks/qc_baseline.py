"""Straightforward numpy/scipy versions of the CT metrics: the "MRIQC-style" anchor.

Same definitions as kernels.qc.ct, written the way a reference script would be
(whole-image filters, morphology, map_coordinates), to time ct_metrics against.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def ct_metrics_baseline(hu: np.ndarray, spacing: float) -> dict[str, float]:
    hu = np.asarray(hu, np.float64)
    h, w = hu.shape
    yy, xx = np.mgrid[:h, :w]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    rr = np.hypot(yy - cy, xx - cx)
    pad = hu <= -1500
    fov_r = rr[pad].min() if pad.mean() > 0.01 else np.inf
    fov = rr < fov_r
    clipped = np.clip(hu, -1100, 3100)
    body = (clipped > -500) & fov
    win = max(5, round(7 / spacing))
    mean = ndimage.uniform_filter(clipped, win)
    sd = np.sqrt(np.maximum(ndimage.uniform_filter(clipped**2, win) - mean**2, 0))
    full = ndimage.uniform_filter(body.astype(float), win) > 0.999
    ok = full & (mean >= 0) & (mean <= 100)
    noise = float(np.percentile(sd[ok], 25)) if ok.sum() > 3 else float("nan")
    margin = max(2, round(5 / spacing))
    air = fov & ~ndimage.binary_dilation(body, iterations=margin) & (rr < fov_r - margin)
    box = ndimage.uniform_filter(clipped, max(3, round(3.5 / spacing)))
    air_hu = float(np.median(hu[air])) if air.sum() > 50 else float("nan")
    motion = float(box[air].std()) if air.sum() > 50 else float("nan")
    r1 = int(min(fov_r, min(h, w) / 2) - 6)
    th = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    r = np.arange(4, r1)
    pol = ndimage.map_coordinates(
        np.clip(hu, -1100, 1500),
        [cy + np.outer(np.sin(th), r), cx + np.outer(np.cos(th), r)],
        order=1,
    )
    hp = pol - ndimage.uniform_filter1d(pol, 7, axis=1)
    srt = np.sort(hp, axis=0)[45:135]
    ring = float(np.abs(srt.mean(axis=0))[8:-4].max())
    metal = (hu > 3000) & fov
    area = float(metal.sum() * spacing**2)
    streak = 0.0
    if metal.sum() >= 3:
        my, mx = np.argwhere(metal).mean(axis=0)
        r0 = int(np.sqrt(metal.sum() / np.pi)) + round(5 / spacing)
        rm = np.arange(r0, r0 + round(40 / spacing))
        t2 = np.linspace(0, 2 * np.pi, 360, endpoint=False)
        p2 = ndimage.map_coordinates(
            np.clip(hu, -1100, 1500),
            [my + np.outer(np.sin(t2), rm), mx + np.outer(np.cos(t2), rm)],
            order=1,
        )
        hp2 = p2 - ndimage.uniform_filter1d(p2, 31, axis=0, mode="wrap")
        streak = float(np.sqrt(np.mean(hp2.mean(axis=1) ** 2)))
    ring_mask = (np.abs(rr - (fov_r - 3)) < 0.5) if np.isfinite(fov_r) else np.zeros_like(fov)
    inner = ndimage.binary_erosion(body, iterations=round(5 / spacing))
    trunc = float(
        (ring_mask & body & ndimage.binary_dilation(inner, iterations=round(5 / spacing))).sum()
        / max(ring_mask.sum(), 1)
    )
    return {
        "noise_hu": noise,
        "ring_hu": ring,
        "metal_area_mm2": area,
        "metal_streak_hu": streak,
        "truncation_fraction": trunc,
        "motion_streak_hu": motion,
        "air_hu": air_hu,
        "air_hu_error": abs(air_hu + 1000),
    }
