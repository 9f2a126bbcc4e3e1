"""Pixels to model input: numpy only, shared by the agent and the models' training scripts.

The training scripts under ``models/`` import :func:`prepare` so that a model sees at run
time exactly the arrays it was trained on. Nothing here touches pydicom or onnxruntime.

Steps, in order, as a model's manifest names them (``input:`` in ``manifest.yaml``):

1. ``crop``: ``pad_square`` pads the shorter side with the background value to a square
   (keeps the whole field of view); ``center_square`` crops the longer side; ``none`` leaves
   the aspect ratio to the resize.
2. resize to ``size`` (height, width): a block mean where the factor is a whole number
   (512 to 64), else an area-weighted linear resample.
3. channels: CT gives one channel per window ``[center, width]`` in HU, each scaled to 0..1;
   MR and DX give one channel, normalised by ``zscore`` (robust: percentiles 1..99) or
   ``minmax``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

F32 = NDArray[np.float32]
Crop = Literal["pad_square", "center_square", "none"]
Normalisation = Literal["zscore", "minmax"]


def square(image: NDArray[np.floating], crop: Crop, fill: float) -> NDArray[np.floating]:
    """Pad or crop ``image`` to a square, centred."""
    rows, cols = image.shape
    if crop == "none" or rows == cols:
        return image
    side = max(rows, cols) if crop == "pad_square" else min(rows, cols)
    out = np.full((side, side), fill, dtype=image.dtype)
    r0, c0 = (side - rows) // 2, (side - cols) // 2
    if crop == "pad_square":
        out[r0 : r0 + rows, c0 : c0 + cols] = image
        return out
    return image[-r0 : -r0 + side, -c0 : -c0 + side]


def resize(image: NDArray[np.floating], size: tuple[int, int]) -> F32:
    """Area resample of a 2-D image to ``size``; a block mean for whole-number factors."""
    rows, cols = image.shape
    out_r, out_c = size
    img = image.astype(np.float32, copy=False)
    if (rows, cols) == (out_r, out_c):
        return img
    if rows % out_r == 0 and cols % out_c == 0:
        fr, fc = rows // out_r, cols // out_c
        block: F32 = img.reshape(out_r, fr, out_c, fc).mean(axis=(1, 3), dtype=np.float32)
        return block
    fr, fc = rows / out_r, cols / out_c
    if fr > 1 or fc > 1:  # anti-alias before a downsample
        img = ndimage.uniform_filter(img, size=(max(1, round(fr)), max(1, round(fc))))
    zoomed: F32 = ndimage.zoom(img, (out_r / rows, out_c / cols), order=1, grid_mode=True,
                               mode="nearest").astype(np.float32, copy=False)  # fmt: skip
    return zoomed


def windows(hu: F32, wins: Sequence[tuple[float, float]]) -> F32:
    """One channel per ``(center, width)`` window, each mapped linearly onto 0..1."""
    out = np.empty((len(wins), *hu.shape), dtype=np.float32)
    for i, (center, width) in enumerate(wins):
        np.clip((hu - (center - width / 2.0)) / width, 0.0, 1.0, out=out[i])
    return out


def normalise(image: F32, how: Normalisation) -> F32:
    if how == "minmax":
        lo, hi = float(image.min()), float(image.max())
        return ((image - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)[None]
    lo, hi = np.percentile(image, [1.0, 99.0])
    clipped = np.clip(image, lo, hi)
    std = float(clipped.std()) or 1.0
    return ((clipped - float(clipped.mean())) / std).astype(np.float32)[None]


def prepare(
    image: NDArray[np.floating],
    size: tuple[int, int],
    *,
    crop: Crop = "pad_square",
    wins: Sequence[tuple[float, float]] = (),
    normalisation: Normalisation | None = None,
    fill: float | None = None,
) -> F32:
    """One 2-D image (HU for CT) to a ``(channels, H, W)`` float32 array."""
    background = float(np.min(image)) if fill is None else fill
    small = resize(square(image, crop, background), size)
    if wins:
        return windows(small, wins)
    return normalise(small, normalisation or "zscore")
