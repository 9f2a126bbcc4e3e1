"""Data for the ICH model: training slices, validation and evaluation series, real heads.

Shared by ``models/ich/train.py`` (training and series-level calibration) and
``benchmarks/eval_triage.py`` (held-out evaluation, with another :class:`Acquisition`).
Synthetic data come from :class:`models.phantoms.ScanHead`; nothing here is patient data
except the real package slices named in :data:`REAL_HEADS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from scipy import ndimage

from agent.triage.preprocess import prepare, resize, square
from models.phantoms import (
    F32,
    LESION_KINDS,
    Acquisition,
    Bleed,
    ScanHead,
    _ellipse,
    draw_bleed,
    head_slice,
)

SIZE = (128, 128)  # v0.4: ~1.8 mm pixels at a 230 mm field of view (v0.3: 64x64, ~3.6 mm)
WINDOWS = ((40.0, 80.0), (80.0, 200.0), (40.0, 380.0))  # brain, subdural, soft tissue
HEAD_MM = 130.0  # skull base to vertex: ScanHead levels 0..1
# Real axial head CT slices shipped by pydicom / pydicom-data (normals: no acute bleed seen).
# 693_UNCR is the lossless original of 693_UNCI (a lossy, posterised conversion of it).
REAL_HEADS = ("693_UNCR.dcm", "693_UNCI.dcm", "J2K_pixelrep_mismatch.dcm")
# Levels where each kind is drawn (intraventricular needs ventricles, cisterns sit low).
# Training (v0.4) draws its heads from WIDER ranges than validation (``Acquisition()``) in field
# of view, noise and head size, and 30% of its bleeds are 3-7 mm (v0.3 at 64x64: 15%, most
# were invisible there). Shift, tilt, streaks and kernels keep the validation ranges.
TRAINING = Acquisition(fov_mm=(180.0, 320.0), noise_hu=(0.6, 3.4), head_scale=(0.78, 1.2),
                       small=0.3)  # fmt: skip
# Training slices also reach the model through a scanner matrix that is NOT the render grid
# (a third of them): 192 or 384, resampled by the agent's non-integer path (the held-out
# evaluation uses 256 and 512, by block mean).
TRAIN_MATRICES = (192, 384)
LEVELS = {"intraventricular": (0.4, 0.68), "subarachnoid": (0.22, 0.9)}
# v0.5: the per-pixel bleed target, at the network's output grid (4x4 input pixels a cell);
# a cell is positive where any of its pixels is mostly bleed. UNKNOWN: no mask (v0.2 heads).
MASK_SIDE, UNKNOWN = 32, 255


def prep(hu: np.ndarray) -> np.ndarray:
    return prepare(hu, SIZE, crop="pad_square", wins=WINDOWS, fill=-1024.0)


def hu_input(hu: np.ndarray) -> np.ndarray:
    """The first two steps of :func:`prep` (square, resize), in HU as float16: training stores
    these and windows them per batch (``train.py``, checked against :func:`prep`), so noise and
    kernel augmentation can act in HU."""
    return resize(square(hu, "pad_square", -1024.0), SIZE).astype(np.float16)


def at_matrix(hu: np.ndarray, matrix: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """A noise-free render resampled to a scanner ``matrix``, with noise made at that matrix."""
    f = matrix / hu.shape[0]
    big = ndimage.zoom(hu, f, order=1).astype(np.float32)
    white = rng.standard_normal(big.shape).astype(np.float32)
    out: np.ndarray = big + noise * f * (
        0.6 * white + 1.2 * ndimage.gaussian_filter(white, 0.7 * f)
    )
    return out


def coarse_mask(m: np.ndarray | None) -> np.ndarray:
    """A 0..1 bleed shape at the input grid (``SIZE``) to the output grid (uint8 0/1); a
    faint small one counts where it is at least half its peak; an empty one (a bleed that
    missed this slice's anatomy) is :data:`UNKNOWN`."""
    if m is None:
        return np.zeros((MASK_SIDE, MASK_SIDE), np.uint8)
    if float(m.max()) <= 0.02:
        return np.full((MASK_SIDE, MASK_SIDE), UNKNOWN, np.uint8)
    f, cut = SIZE[0] // MASK_SIDE, min(0.35, 0.5 * float(m.max()))
    return (m > cut).reshape(MASK_SIDE, f, MASK_SIDE, f).any(axis=(1, 3)).astype(np.uint8)


def partial_volume(bleed: Bleed, thickness: float) -> float:
    """Share of a thick slice a small bleed fills (its extent across the slice ~ its size)."""
    return float(min(1.0, (bleed.size_mm + 1.0) / thickness))


def _level(rng: np.random.Generator, kind: str | None) -> float:
    lo, hi = LEVELS.get(kind or "", (0.05, 0.97))
    return float(rng.uniform(lo, hi))


Slices = tuple[np.ndarray, np.ndarray, np.ndarray]  # HU inputs, labels (N, 1), masks


def training_slices(n: int, rng: np.random.Generator, acq: Acquisition = TRAINING) -> Slices:
    """``n`` single slices (HU, :func:`hu_input`), every other one with a bleed at a random edge
    weight; a third through a scanner matrix of :data:`TRAIN_MATRICES`; and the bleed's
    :func:`coarse_mask` (the render grid is the input grid)."""
    xs, ys, ms = [], [], []
    for i in range(n):
        head = ScanHead(rng, acq)
        bleed = draw_bleed(rng, acq) if i % 2 else None
        level = _level(rng, bleed.kind if bleed else None)
        if bleed is None and head.calcs and rng.random() < 0.5:  # at a calcification
            level = float(rng.choice([c[2] for c in head.calcs])) + rng.uniform(-0.01, 0.01)
        w = 1.0
        if bleed:  # an edge slice or a thick one dilutes it, but a positive stays visible
            w = rng.uniform(0.7, 1.0) * partial_volume(bleed, head.thick)
            w = float(min(1.0, max(w, 12.0 / (bleed.hu - 28.0))))
        if i % 3 == 2:
            matrix = int(rng.choice(TRAIN_MATRICES))
            img = at_matrix(head.render(level, bleed, w, noise=False), matrix, head.noise, rng)
        else:
            img = head.render(level, bleed, w)
        xs.append(hu_input(img))
        ys.append(float(bleed is not None))
        ms.append(coarse_mask(head.bleed_mask if bleed else None))
        if (i + 1) % 2000 == 0:
            print(f"  {i + 1}/{n} synthetic slices", flush=True)
    return np.stack(xs), np.array(ys, np.float32)[:, None], np.stack(ms)


def legacy_slices(n: int, rng: np.random.Generator) -> Slices:
    """The v0.2 generator (models.phantoms.head_slice), so its heads stay understood; its
    bleeds have no mask (:data:`UNKNOWN`), its normals an empty one."""
    kinds = [str(rng.choice(LESION_KINDS)) if i % 2 else None for i in range(n)]
    xs = [hu_input(head_slice(rng, k)) for k in kinds]
    ms = np.stack([np.full((MASK_SIDE,) * 2, UNKNOWN * (k is not None), np.uint8) for k in kinds])
    return np.stack(xs), np.array([float(k is not None) for k in kinds], np.float32)[:, None], ms


def real_hu(name: str) -> tuple[np.ndarray, float]:
    """A real slice in HU and its pixel size (mm)."""
    ds = dcmread(get_testdata_file(name, download=False))
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return np.clip(hu, -1024, 3071), float(ds.PixelSpacing[0])


def insert_lesion(
    hu: F32, rng: np.random.Generator, pixel_mm: float = 0.5, min_brain_px: int = 400,
    radius_mm: tuple[float, float] = (5, 16), hu_range: tuple[float, float] = (55, 90),
) -> F32:  # fmt: skip
    """Put an intraparenchymal-like hyperdense blob into brain tissue of a real slice
    (``pixel_mm``: its pixel size; the blob's soft edge is two pixels wide)."""
    brain = ndimage.binary_erosion((hu > 15) & (hu < 50), iterations=6)
    ys, xs = np.nonzero(brain)
    if len(ys) < min_brain_px:
        raise ValueError("no brain tissue to place a lesion in")
    i = rng.integers(len(ys))
    yy, xx = np.mgrid[: hu.shape[0], : hu.shape[1]].astype(np.float32)
    r = rng.uniform(*radius_mm) / pixel_mm
    blob = _ellipse(xx, yy, float(xs[i]), float(ys[i]), r, r * rng.uniform(0.6, 1.4), 0.0)
    blob = blob * ((hu > -20) & (hu < 100))
    target = rng.uniform(*hu_range)
    return (hu * (1 - blob) + target * blob).astype(np.float32)


def real_slices(n: int, rng: np.random.Generator) -> Slices:
    """Real heads at 128x128 (block mean), rotated, zoomed, shifted, flipped, re-noised and
    re-kerneled; a quarter with an inserted bleed-like blob (3-20 mm, 50-90 HU), its mask
    where the blob changed the slice by more than 5 HU."""
    heads = []
    for name in REAL_HEADS:
        hu, mm = real_hu(name)
        heads.append((hu.reshape(128, 4, 128, 4).mean(axis=(1, 3)), mm * 4))
    xs, ys, ms = [], [], []
    for i in range(n):
        hu, mm = heads[i % len(heads)]
        img = ndimage.rotate(hu, rng.uniform(-20, 20), reshape=False, order=1, cval=-1024)
        zoom = rng.uniform(0.85, 1.15)
        img = ndimage.affine_transform(img, np.eye(2) / zoom, offset=64 - 64 / zoom +
                                       rng.uniform(-12, 12, 2), order=1, cval=-1024)  # fmt: skip
        img = img[:, ::-1] if rng.random() < 0.5 else img
        positive, blob = i % 4 == 3, None
        if positive:
            before = np.ascontiguousarray(img, np.float32)
            img = insert_lesion(before, rng, pixel_mm=mm / zoom, min_brain_px=100,
                                radius_mm=(1.5, 10), hu_range=(50, 90))  # fmt: skip
            blob = (np.abs(img - before) > 5).astype(np.float32)
        if rng.random() < 0.5:
            img = ndimage.gaussian_filter(img, rng.uniform(0.3, 0.8))
        img = img + rng.normal(0, rng.uniform(0, 6), img.shape)
        xs.append(hu_input(img.astype(np.float32)))
        ys.append(float(positive))
        ms.append(coarse_mask(blob))
    return np.stack(xs), np.array(ys, np.float32)[:, None], np.stack(ms)


@dataclass
class Series:
    """One synthetic series: slices in HU on the head's render grid, and what is in them."""

    slices: list[np.ndarray]
    pixel_mm: float
    thickness_mm: float
    bleed: Bleed | None
    bleed_slices: list[int] = field(default_factory=list)
    calcified: bool = False
    head: ScanHead | None = None
    levels: list[float] = field(default_factory=list)  # each slice's ScanHead level


def make_series(rng: np.random.Generator, acq: Acquisition, n: int, kind: str | None,
                spacing_mm: tuple[float, float] = (4.0, 8.0), noise: bool = True) -> Series:  # fmt: skip
    """``n`` contiguous slices through one head; a bleed (if ``kind``) on 1-3 consecutive ones,
    fainter on its edge slices and in slices thicker than it."""
    head = ScanHead(rng, acq)
    step = rng.uniform(*spacing_mm) / HEAD_MM
    lo = 0.03
    span = step * (n - 1)
    start = rng.uniform(lo, max(lo, 0.97 - span))
    levels = [min(0.99, start + j * step) for j in range(n)]
    bleed, where, weights = None, [], {}
    if kind:
        bleed = draw_bleed(rng, acq, kind)
        lv = _level(rng, kind)
        centre = int(np.argmin([abs(level - lv) for level in levels]))
        k = int(rng.integers(1, 4))
        first = int(np.clip(centre - (k - 1) // 2, 0, n - k))
        where = list(range(first, first + k))
        profile = {1: [1.0], 2: [1.0, rng.uniform(0.5, 1)], 3: [rng.uniform(0.4, 0.9), 1.0,
                   rng.uniform(0.4, 0.9)]}[k]  # fmt: skip
        pv = partial_volume(bleed, head.thick)
        weights = {j: p * pv for j, p in zip(where, profile, strict=True)}
    slices = [head.render(level, bleed if j in weights else None, weights.get(j, 1.0), noise)
              for j, level in enumerate(levels)]  # fmt: skip
    return Series(slices, head.pix, head.thick, bleed, where, bool(head.calcs), head, levels)


def top_k_mean(scores: np.ndarray, k: int = 2) -> float:
    """The agent's series aggregation (agent.triage.engine.aggregate, top_k_mean)."""
    return float(np.sort(scores)[::-1][:k].mean())
