"""Where on a slice a triage model's score comes from: occlusion sensitivity.

The ICH model scores a whole slice and outputs no map. To outline the bleed the key image
asks the model itself: each 8x8 patch of a 64x64 input (16x16 of a 128x128 one: patch,
stride and blur scale with the input) is replaced in turn by a median
blur of its surroundings (which removes a small dense focus and keeps the anatomy), and
the score lost there is that patch's weight (Zeiler & Fergus, ECCV 2014, "Visualizing and
Understanding Convolutional Networks"). The region is the bounding box of the connected
area losing at least half the largest drop, mapped back to the slice's pixels. When the
model is not the one that scored the finding, or occlusion moves the score by little,
there is no region and the key image falls back to the slice-level score box.

Models are loaded (and verified) lazily from the shipped folder or the configured one, on
the CPU, once per renderer; the renderer serialises calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from scipy import ndimage

from agent.config import TriageConfig
from agent.errors import ModelError
from agent.qc.locate import Box
from agent.triage.engine import preprocess
from agent.triage.models import default_models_dir, load_models
from agent.triage.sessions import Runner, infer_slices, open_session

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]
PATCH = 8  # input pixels per 64 (scaled with the input): about 29 mm of a 230 mm head
STRIDE = 4
BLUR = 11  # median window per 64 pixels: wider than the bleeds the model card names (3-25 mm)
MIN_DROP = 0.05  # of the slice's score: below it the model points nowhere in particular


class Saliency:
    def __init__(self, models_dir: Path | None = None) -> None:
        self.folder = models_dir or default_models_dir()
        self._runners: dict[str, Runner] | None = None

    def region(self, ds: Dataset, frame: int, model_tag: str, label: str) -> Box | None:
        """The box (slice pixels) where the model's ``label`` score depends on the image."""
        runner = self._runner(model_tag)
        if runner is None:
            return None
        man = runner.model.manifest
        if label not in man.outputs.labels or man.input.slice_context:
            return None
        try:
            x = preprocess(ds, runner.model)[frame]
        except (ValueError, IndexError, AttributeError):
            return None
        drop = occlusion_map(
            lambda batch: infer_slices(runner, batch)[:, man.outputs.labels.index(label)], x
        )
        if drop is None:
            return None
        rows, cols = int(ds.Rows), int(ds.Columns)
        if man.input.crop not in ("pad_square",) and rows != cols:
            return None  # a crop or a stretch: the grid does not map back simply
        return to_slice(drop, rows, cols)

    def _runner(self, model_tag: str) -> Runner | None:
        if self._runners is None:
            self._runners = {}
            try:
                cfg = TriageConfig(device="cpu", threads=1)
                for model in load_models(self.folder):
                    self._runners[model.tag] = open_session(model, cfg, None)
            except (ModelError, OSError) as exc:
                log.warning("key image: no triage saliency (%s)", exc)
        return self._runners.get(model_tag)


def occlusion_map(score: Callable[[list[F32]], NDArray[np.floating]], x: F32) -> F32 | None:
    """Per input pixel, the mean score lost when a patch covering it is blurred away;
    None when no patch moves the score by ``MIN_DROP`` of it."""
    c, h, w = x.shape
    scale = max(1, round(h / 64))
    patch, stride, size = PATCH * scale, STRIDE * scale, BLUR * scale
    blurred = np.stack([ndimage.median_filter(x[i], size=size, mode="nearest") for i in range(c)])
    corners = [
        (y, z) for y in range(0, h - patch + 1, stride) for z in range(0, w - patch + 1, stride)
    ]
    batch = np.repeat(x[None], len(corners) + 1, axis=0)
    for n, (y, z) in enumerate(corners, start=1):
        batch[n, :, y : y + patch, z : z + patch] = blurred[:, y : y + patch, z : z + patch]
    scores = np.asarray(score(list(batch)), dtype=np.float64)
    base, drops = scores[0], scores[0] - scores[1:]
    if base <= 0 or drops.max() < MIN_DROP * base:
        return None
    total = np.zeros((h, w), np.float64)
    count = np.zeros((h, w), np.float64)
    for d, (y, z) in zip(drops, corners, strict=True):
        total[y : y + patch, z : z + patch] += max(d, 0.0)
        count[y : y + patch, z : z + patch] += 1.0
    out: F32 = (total / np.maximum(count, 1.0)).astype(np.float32)
    return out


def to_slice(drop: F32, rows: int, cols: int) -> Box:
    """The box around the strongest connected area of ``drop``, in slice pixels (the grid
    covers the slice padded to a square, centred)."""
    hot = drop >= 0.5 * float(drop.max())
    labels, n = ndimage.label(hot)
    sums: Sequence[float] = ndimage.sum(drop, labels, range(1, n + 1))
    ys, xs = np.nonzero(labels == 1 + int(np.argmax(sums)))
    side = max(rows, cols)
    f = side / drop.shape[0]
    r0, c0 = (side - rows) // 2, (side - cols) // 2
    return Box(float(ys.min() * f - r0), float(xs.min() * f - c0),
               float((ys.max() + 1) * f - 1 - r0), float((xs.max() + 1) * f - 1 - c0))  # fmt: skip
