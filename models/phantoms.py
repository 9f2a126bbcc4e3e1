"""Procedural CT slices in HU for training and testing the shipped models.

Nothing here is patient data. Heads are ellipses of scalp, skull, CSF and brain with
smooth texture and noise; haemorrhages are simulated as hyperdense (50-90 HU) shapes with
soft (partial-volume) edges: epidural lenses, subdural crescents, intraparenchymal and
intraventricular blobs. Bodies (chest, abdomen, pelvis) are crude ellipse phantoms.
Every function takes a ``numpy.random.Generator`` so a seed reproduces a data set.

Used by ``models/*/train.py`` (never by the agent) and by the tests.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

F32 = NDArray[np.float32]
SIZE = 128  # pixels
PIX = 2.0  # mm per pixel: a 256 mm field of view
AIR = -1000.0
LESION_KINDS = ("epidural", "subdural", "intraparenchymal", "intraventricular")


def _grid(size: int = SIZE) -> tuple[F32, F32]:
    ax = (np.arange(size, dtype=np.float32) - size / 2 + 0.5) * PIX
    return np.meshgrid(ax, ax, indexing="xy")


def _ellipse(x: F32, y: F32, cx: float, cy: float, a: float, b: float, theta: float) -> F32:
    """Soft (one-pixel partial-volume) mask of an ellipse."""
    c, s = np.cos(theta), np.sin(theta)
    u = ((x - cx) * c + (y - cy) * s) / a
    v = (-(x - cx) * s + (y - cy) * c) / b
    r = np.sqrt(u * u + v * v)
    edge = PIX / max(min(a, b), PIX)
    return np.clip((1.0 - r) / edge + 0.5, 0.0, 1.0).astype(np.float32)


def _smooth_field(rng: np.random.Generator, sigma_mm: float, size: int = SIZE) -> F32:
    noise = rng.standard_normal((size, size)).astype(np.float32)
    field = ndimage.gaussian_filter(noise, sigma_mm / PIX)
    return (field / (field.std() + 1e-6)).astype(np.float32)


def _finish(img: F32, rng: np.random.Generator, noise: tuple[float, float] = (1.5, 5.0)) -> F32:
    """Scanner blur and quantum noise (as left after the 4x block mean of the input), and a
    left-right flip."""
    img = ndimage.gaussian_filter(img, rng.uniform(0.2, 0.5))
    img = img + rng.normal(0.0, rng.uniform(*noise), img.shape).astype(np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(img, dtype=np.float32)


class Head:
    """One axial head slice: geometry kept so lesions can be placed against the skull."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.x, self.y = _grid()
        level = rng.uniform(0.55, 1.0)  # 1: widest (ventricles); small near vertex or base
        self.a = rng.uniform(68, 80) * level  # inner skull, left-right (mm)
        self.b = rng.uniform(82, 96) * level  # inner skull, anterior-posterior
        self.theta = rng.uniform(-0.25, 0.25)
        self.cx, self.cy = rng.uniform(-12, 12), rng.uniform(-12, 12)
        self.bone = rng.uniform(5, 10)
        self.level = level
        self.brain = _ellipse(self.x, self.y, self.cx, self.cy, self.a, self.b, self.theta)
        self.img = self._draw()

    def _draw(self) -> F32:
        rng, x, y = self.rng, self.x, self.y
        e = lambda da, db: _ellipse(x, y, self.cx, self.cy, self.a + da, self.b + db, self.theta)  # noqa: E731
        img = np.full(x.shape, AIR, dtype=np.float32)
        scalp = e(self.bone + 5, self.bone + 6)
        img = img * (1 - scalp) + 35.0 * scalp
        skull = e(self.bone, self.bone)
        bone_hu = rng.uniform(900, 1500) + 250 * _smooth_field(rng, 6)
        img = img * (1 - skull) + bone_hu * skull
        csf_rim = e(0, 0)
        img = img * (1 - csf_rim) + rng.uniform(0, 10) * csf_rim
        brain = e(-rng.uniform(1.5, 4), -rng.uniform(1.5, 4))
        texture = rng.uniform(24, 34) + rng.uniform(2, 5) * _smooth_field(rng, rng.uniform(3, 8))
        img = img * (1 - brain) + texture * brain
        self.inner = brain
        if self.level > 0.75:  # lateral ventricles at mid levels
            for side in (-1, 1):
                va, vb = rng.uniform(4, 12), rng.uniform(14, 26)
                vx = self.cx + side * rng.uniform(6, 14)
                vy = self.cy + rng.uniform(-8, 6)
                v = _ellipse(x, y, vx, vy, va, vb, self.theta + side * rng.uniform(0, 0.4))
                img = img * (1 - v) + rng.uniform(2, 10) * v
                self.ventricles = (vx, vy, va, vb)
        for _ in range(rng.integers(0, 3)):  # calcifications (choroid, pineal): not bleeds
            r = rng.uniform(1.0, 3.0)
            cx, cy = self.cx + rng.uniform(-25, 25), self.cy + rng.uniform(-30, 30)
            c = _ellipse(x, y, cx, cy, r, r, 0) * self.inner
            img = img * (1 - c) + rng.uniform(120, 400) * c
        return img.astype(np.float32)

    def add_lesion(self, kind: str) -> None:
        getattr(self, "_" + kind)()

    def _boundary_point(self) -> tuple[float, float, float]:
        """A point on the inner skull at a random angle, and the outward normal angle."""
        phi = self.rng.uniform(0, 2 * np.pi)
        c, s = np.cos(self.theta), np.sin(self.theta)
        u, v = self.a * np.cos(phi), self.b * np.sin(phi)
        px, py = self.cx + u * c - v * s, self.cy + u * s + v * c
        return float(px), float(py), float(np.arctan2(py - self.cy, px - self.cx))

    def _paint(self, mask: F32, hu: float) -> None:
        mask = np.clip(mask, 0, 1) * np.clip(self.inner * 1.2, 0, 1)
        texture = hu + 4.0 * _smooth_field(self.rng, 2)
        self.img = (self.img * (1 - mask) + texture * mask).astype(np.float32)

    def _epidural(self) -> None:
        rng = self.rng
        px, py, normal = self._boundary_point()
        thick, length = rng.uniform(6, 20), rng.uniform(25, 55)
        cx = px - np.cos(normal) * thick / 2
        cy = py - np.sin(normal) * thick / 2
        lens = _ellipse(self.x, self.y, cx, cy, thick / 2 + 2, length / 2, normal)
        self._paint(lens, rng.uniform(60, 90))

    def _subdural(self) -> None:
        rng = self.rng
        thick = rng.uniform(3, 12)
        inner = _ellipse(self.x, self.y, self.cx, self.cy, self.a - thick, self.b - thick,
                         self.theta)  # fmt: skip
        band = np.clip(self.inner - inner, 0, 1)
        phi0, span = rng.uniform(0, 2 * np.pi), rng.uniform(0.7, 2.2)
        ang = np.arctan2(self.y - self.cy, self.x - self.cx)
        d = np.angle(np.exp(1j * (ang - phi0)))
        taper = np.clip(1.0 - np.abs(d) / (span / 2), 0, 1) ** 0.5
        self._paint((band * taper).astype(np.float32), rng.uniform(50, 80))

    def _intraparenchymal(self) -> None:
        rng = self.rng
        r = rng.uniform(4, 15)
        for _ in range(20):
            cx = self.cx + rng.uniform(-0.6, 0.6) * self.a
            cy = self.cy + rng.uniform(-0.6, 0.6) * self.b
            if self.inner[int(cy / PIX + SIZE / 2), int(cx / PIX + SIZE / 2)] > 0.9:
                break
        blob = _ellipse(self.x, self.y, cx, cy, r, r * rng.uniform(0.6, 1.4), rng.uniform(0, 3))
        blob = np.clip(blob + 0.35 * _smooth_field(rng, 3) * (blob > 0.05), 0, 1)
        oedema = _ellipse(self.x, self.y, cx, cy, r * 1.6, r * 1.6, 0) * (1 - blob)
        self.img = (self.img - rng.uniform(0, 10) * oedema * self.inner).astype(np.float32)
        self._paint(blob.astype(np.float32), rng.uniform(55, 90))

    def _intraventricular(self) -> None:
        rng = self.rng
        vx, vy, va, vb = getattr(self, "ventricles", (self.cx + 10, self.cy, 6.0, 16.0))
        fill = _ellipse(self.x, self.y, vx, vy + vb * rng.uniform(0.2, 0.6), va * 0.9,
                        vb * rng.uniform(0.3, 0.6), self.theta)  # fmt: skip
        self._paint(fill, rng.uniform(55, 80))


def head_slice(rng: np.random.Generator, lesion: str | None = None) -> F32:
    """A 128x128 (2 mm pixels) head slice in HU; ``lesion`` one of :data:`LESION_KINDS` or None."""
    head = Head(rng)
    if lesion:
        head.add_lesion(lesion)
    return _finish(head.img, rng)


def insert_lesion(
    hu: F32, rng: np.random.Generator, pixel_mm: float = 0.5, min_brain_px: int = 400
) -> F32:
    """Put an intraparenchymal-like hyperdense blob into brain tissue of a real slice."""
    brain = ndimage.binary_erosion((hu > 15) & (hu < 50), iterations=6)
    ys, xs = np.nonzero(brain)
    if len(ys) < min_brain_px:
        raise ValueError("no brain tissue to place a lesion in")
    i = rng.integers(len(ys))
    yy, xx = np.mgrid[: hu.shape[0], : hu.shape[1]].astype(np.float32)
    r = rng.uniform(5, 16) / pixel_mm
    blob = _ellipse(xx, yy, float(xs[i]), float(ys[i]), r, r * rng.uniform(0.6, 1.4), 0.0)
    blob = blob * ((hu > -20) & (hu < 100))
    target = rng.uniform(55, 90)
    return (hu * (1 - blob) + target * blob).astype(np.float32)


def body_slice(rng: np.random.Generator, part: str) -> F32:
    """A crude axial CHEST, ABDOMEN or PELVIS slice in HU (128 pixels of 2 mm)."""
    x, y = _grid()
    a, b = rng.uniform(95, 122), rng.uniform(70, 95)
    cx, cy = rng.uniform(-8, 8), rng.uniform(-8, 8)
    img = np.full(x.shape, AIR, dtype=np.float32)

    def put(mask: F32, hu: float | F32) -> None:
        nonlocal img
        img = img * (1 - mask) + hu * mask

    put(_ellipse(x, y, cx, cy, a, b, 0), rng.uniform(-110, -80))  # fat
    put(_ellipse(x, y, cx, cy, a - 12, b - 10, 0), 40 + 5 * _smooth_field(rng, 6))  # muscle
    spine_y = cy + b * rng.uniform(0.45, 0.6)
    put(_ellipse(x, y, cx, spine_y, 15, 13, 0), rng.uniform(250, 450))  # vertebral body
    if part == "CHEST":
        for side in (-1, 1):  # lungs
            lung = _ellipse(x, y, cx + side * a * 0.45, cy, a * 0.38, b * 0.72, side * 0.15)
            put(lung, rng.uniform(-880, -780) + 30 * _smooth_field(rng, 3))
        put(_ellipse(x, y, cx + 12, cy - 8, 32, 30, 0.5), rng.uniform(35, 50))  # heart
        put(_ellipse(x, y, cx - 2, spine_y - 22, 9, 9, 0), rng.uniform(35, 200))  # aorta
        for k in range(-5, 6):  # ribs at the edge
            phi = np.pi / 2 + k * 0.28
            put(_ellipse(x, y, cx + (a - 16) * np.cos(phi), cy + (b - 13) * np.sin(phi),
                         4, 4, 0), rng.uniform(400, 800))  # fmt: skip
    elif part == "ABDOMEN":
        put(_ellipse(x, y, cx - a * 0.35, cy - 5, a * 0.38, b * 0.55, 0.3), rng.uniform(50, 70))
        for side in (-1, 1):  # kidneys
            put(_ellipse(x, y, cx + side * 40, spine_y - 5, 13, 22, side * 0.5),
                rng.uniform(30, 180))  # fmt: skip
        for _ in range(rng.integers(3, 9)):  # bowel gas
            put(_ellipse(x, y, cx + rng.uniform(-50, 60), cy + rng.uniform(-50, 20),
                         rng.uniform(4, 12), rng.uniform(4, 12), 0), -950.0)  # fmt: skip
    else:  # PELVIS
        for side in (-1, 1):  # iliac wings / femoral heads
            put(_ellipse(x, y, cx + side * a * 0.6, cy + 10, 22, 22, 0), rng.uniform(300, 700))
            put(_ellipse(x, y, cx + side * a * 0.6, cy + 10, 14, 14, 0), rng.uniform(150, 300))
        put(_ellipse(x, y, cx, cy - 15, 30, 22, 0), rng.uniform(0, 15))  # bladder
        put(_ellipse(x, y, cx, spine_y + 5, 18, 10, 0), rng.uniform(250, 450))  # sacrum
    return _finish(img.astype(np.float32), rng, noise=(3.0, 8.0))
