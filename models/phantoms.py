"""Procedural CT slices in HU for training and testing the shipped models.

Nothing here is patient data. Heads are ellipses of scalp, skull, CSF and brain with
smooth texture and noise; haemorrhages are simulated as hyperdense (50-90 HU) shapes with
soft (partial-volume) edges: epidural lenses, subdural crescents, intraparenchymal and
intraventricular blobs. Bodies (chest, abdomen, pelvis) are crude ellipse phantoms.
:func:`head_slice` is the v0.2 head (kept as it was: the body-part model, tests and the demo
use it); :class:`ScanHead` is the v0.3 one, with hard negatives, acquisition variety and
subarachnoid blood, for the ICH model (series are assembled in ``models/ich/data.py``).
Every function takes a ``numpy.random.Generator`` so a seed reproduces a data set.

Used by ``models/*/train.py`` (never by the agent) and by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def _ellipse(
    x: F32, y: F32, cx: float, cy: float, a: float, b: float, theta: float, pix: float = PIX
) -> F32:
    """Soft (one-pixel partial-volume) mask of an ellipse."""
    c, s = np.cos(theta), np.sin(theta)
    u = ((x - cx) * c + (y - cy) * s) / a
    v = (-(x - cx) * s + (y - cy) * c) / b
    r = np.sqrt(u * u + v * v)
    edge = pix / max(min(a, b), pix)
    return np.clip((1.0 - r) / edge + 0.5, 0.0, 1.0).astype(np.float32)


def _smooth_field(
    rng: np.random.Generator, sigma_mm: float, size: int = SIZE, pix: float = PIX
) -> F32:
    noise = rng.standard_normal((size, size)).astype(np.float32)
    field = ndimage.gaussian_filter(noise, sigma_mm / pix)
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


# --- ICH v0.3: heads with hard negatives, varied scans, bleeds over 1-3 slices ------------

ICH_KINDS = (*LESION_KINDS, "subarachnoid")
GRID = 128  # rendering matrix; the field of view sets the pixel size


@dataclass(frozen=True)
class Acquisition:
    """Ranges one head and its scan are drawn from (the held-out evaluation uses others)."""

    fov_mm: tuple[float, float] = (200.0, 280.0)
    thickness_mm: tuple[float, float] = (0.6, 5.0)
    noise_hu: tuple[float, float] = (0.8, 3.0)  # per rendered pixel at 5 mm, smooth kernel
    sharp: float = 0.4  # share of edge-enhancing kernels
    head_scale: tuple[float, float] = (0.85, 1.12)
    shift_mm: float = 15.0
    tilt: float = 0.35  # radians, in plane
    calcified: float = 0.7  # share of heads with physiological calcifications
    streaks: float = 0.5  # share of heads with beam-hardening streaks above the skull base
    small: float = 0.35  # share of bleeds of 3-7 mm; the rest 7-25 mm
    faint: float = 0.35  # share of bleeds at 50-65 HU; the rest 60-90 HU


@dataclass
class Bleed:
    """One haemorrhage: its kind, size (mm), density (HU) and a seed for its shape."""

    kind: str
    size_mm: float
    hu: float
    shape: int


def draw_bleed(rng: np.random.Generator, acq: Acquisition, kind: str | None = None) -> Bleed:
    kind = kind or str(rng.choice(ICH_KINDS))
    size = rng.uniform(3, 7) if rng.random() < acq.small else rng.uniform(7, 25)
    hu = rng.uniform(50, 65) if rng.random() < acq.faint else rng.uniform(60, 90)
    return Bleed(kind, float(size), float(hu), int(rng.integers(2**31)))


class ScanHead:
    """A head (skull base to vertex, ``level`` 0..1 over 130 mm) and how it is scanned.

    Normal anatomy carries the usual false alarms: calcified pineal, choroid plexus, falx and
    basal ganglia; a slightly dense falx; partial volume of the inner table (wide near the
    vertex and in thick slices); petrous bone, sinuses and beam-hardening streaks at the
    skull base; sharp or smooth kernels; thin, noisy or thick, blurred slices."""

    def __init__(self, rng: np.random.Generator, acq: Acquisition = Acquisition()) -> None:
        self.rng, u = rng, rng.uniform
        self.pix = u(*acq.fov_mm) / GRID
        ax = (np.arange(GRID, dtype=np.float32) - GRID / 2 + 0.5) * self.pix
        self.x, self.y = np.meshgrid(ax, ax, indexing="xy")
        s = u(*acq.head_scale)
        self.a, self.b = 70 * s * u(0.92, 1.08), 86 * s * u(0.92, 1.08)
        self.cx, self.cy = (float(v) for v in rng.uniform(-1, 1, 2) * acq.shift_mm)
        self.theta = u(-acq.tilt, acq.tilt)
        self.bone, self.bone_hu = u(4.5, 9.0), u(900, 1600)
        self.wm, self.gm_delta, self.csf = u(23, 31), u(4, 10), u(0, 10)
        self.falx_hu, self.atrophy, self.vent = u(35, 60), u(0, 1), u(0.7, 1.5)
        self.thick = u(*acq.thickness_mm)
        self.sharp = rng.random() < acq.sharp
        self.noise = u(*acq.noise_hu) * np.sqrt(5 / self.thick) * (2.2 if self.sharp else 1.0)
        self.kernel = u(0.3, 1.0) if self.sharp else u(0.4, 1.1)  # pixels
        self.streaky = rng.random() < acq.streaks
        self.flip = rng.random() < 0.5
        self.calcs = self._calcifications() if rng.random() < acq.calcified else []
        self.bleed_mask: F32 | None = None  # the last render's bleed shape, 0..1, as the image

    def _calcifications(self) -> list[tuple[float, float, float, float, float, float]]:
        """(x, y, level, radius mm, HU, elongation) relative to the head centre and size."""
        rng, out = self.rng, []
        if rng.random() < 0.7:  # pineal: midline, behind the third ventricle
            out.append((0, 0.18, rng.uniform(0.33, 0.42), rng.uniform(1.5, 4.5),
                        rng.uniform(150, 1000), 1.0))  # fmt: skip
        if rng.random() < 0.6:  # choroid plexus glomus, both atria
            lv, r = rng.uniform(0.40, 0.52), rng.uniform(1.5, 4.0)
            for side in (-1, 1):
                out.append((side * rng.uniform(0.26, 0.36), rng.uniform(0.22, 0.32), lv, r,
                            rng.uniform(100, 700), 1.3))  # fmt: skip
        for _ in range(rng.integers(0, 3)):  # falx plaques, elongated along the midline
            out.append((0, rng.uniform(-0.7, 0.7), rng.uniform(0.5, 0.92), rng.uniform(1, 3),
                        rng.uniform(150, 1000), rng.uniform(1.5, 4)))  # fmt: skip
        if rng.random() < 0.35:  # globus pallidus, both sides
            lv, r = rng.uniform(0.30, 0.40), rng.uniform(1.5, 3.5)
            for side in (-1, 1):
                out.append((side * rng.uniform(0.22, 0.3), rng.uniform(-0.12, 0.02), lv, r,
                            rng.uniform(100, 400), 1.2))  # fmt: skip
        return out

    # geometry at one level: inner-table semi-axes and obliquity of the skull to the slice
    def size_at(self, level: float) -> tuple[float, float, float]:
        f = 0.8 + 0.2 * min(1.0, level / 0.5) if level < 0.55 else 1 - ((level - 0.55) / 0.55) ** 2
        f = float(np.sqrt(max(f, 0.12)) if level >= 0.55 else f)
        oblique = 1 + 4 * max(0.0, level - 0.75) / 0.25 + 1.5 * max(0.0, 0.15 - level) / 0.15
        return self.a * f, self.b * f, oblique

    def _e(self, x: float, y: float, a: float, b: float, th: float = 0.0) -> F32:
        """A soft ellipse at head-relative (x, y) mm, rotated with the head."""
        c, s = np.cos(self.theta), np.sin(self.theta)
        cx, cy = self.cx + x * c - y * s, self.cy + x * s + y * c
        return _ellipse(self.x, self.y, cx, cy, a, b, self.theta + th, self.pix)

    def _field(self, sigma_mm: float) -> F32:
        return _smooth_field(self.rng, sigma_mm, GRID, self.pix)

    def render(self, level: float, bleed: Bleed | None = None, weight: float = 1.0,
               noise: bool = True) -> F32:  # fmt: skip
        """One axial slice in HU (GRID x GRID, ``self.pix`` mm); ``weight`` scales the bleed
        (its edge slices and its partial volume in a thick slice)."""
        rng, u = self.rng, self.rng.uniform
        A, B, obl = self.size_at(level)
        bone = self.bone * (1 + 0.5 * (obl - 1))
        img = np.full(self.x.shape, AIR, np.float32)
        put = lambda m, hu: img * (1 - m) + hu * m  # noqa: E731
        img = put(self._e(0, 0, A + bone + 5, B + bone + 6), u(25, 45))
        img = put(self._e(0, 0, A + bone, B + bone), self.bone_hu + 250 * self._field(6))
        inner = self._e(0, 0, A, B)
        c, s = np.cos(self.theta), np.sin(self.theta)
        hx, hy = self.x - self.cx, self.y - self.cy
        ux, uy = hx * c + hy * s, -hx * s + hy * c  # head frame: +uy posterior
        depth = (1 - np.sqrt((ux / A) ** 2 + (uy / B) ** 2)) * (A + B) / 2  # mm inside
        brain = self.wm + self.gm_delta * np.clip(1 - (depth - 1.5) / 4, 0, 1)
        brain = brain + rng.uniform(1.5, 3) * self._field(u(2, 6))
        rim = 0.6 + self.atrophy * 2.5  # CSF over the convexity, wider with atrophy
        brain = np.where(depth < rim, self.csf, brain)
        band = 0.5 + 0.35 * self.thick * obl  # inner-table partial volume
        pv = np.clip(1 - depth / band, 0, 1) ** 2 * u(0.15, 0.5)
        brain = brain * (1 - pv) + self.bone_hu * pv
        marks = {k: np.zeros_like(img) for k in ("sulci", "cistern", "ventricle")}
        if level > 0.25:  # sulci: thin CSF lines in the cortex
            line = np.abs(self._field(u(2.5, 4)))
            sul = (line < 0.12 + 0.15 * self.atrophy) & (depth > 1) & (depth < 18)
            marks["sulci"] = ndimage.gaussian_filter(sul.astype(np.float32), 0.5)
            brain = brain * (1 - marks["sulci"]) + self.csf * marks["sulci"]
        img = put(inner, brain)
        if level < 0.22:
            img = self._skull_base(img, A, B, level)
        if 0.2 < level < 0.36:  # suprasellar / ambient cisterns around the midbrain
            ring = np.clip(self._e(0, -4, 18, 15) - self._e(0, -2, 11, 10), 0, 1)
            marks["cistern"] = ring
            img = put(ring, self.csf)
        if 0.28 < level < 0.42:  # third ventricle
            img = put(self._e(0, -2, 1.5 * self.vent, 10), self.csf)
        if 0.36 < level < 0.72:  # lateral ventricles, posterior horns and atria lower down
            va = 5 + 4 * self.vent
            for side in (-1, 1):
                v = self._e(side * 0.13 * A, 0.05 * B, va * 0.6, 0.32 * B, -side * 0.15)
                marks["ventricle"] = np.maximum(marks["ventricle"], v)
            img = put(marks["ventricle"], self.csf)
        if level > 0.4:  # falx: faintly dense midline
            f = self._e(0, 0, u(0.5, 1.1), B) * inner * (np.abs(uy) > (0.5 - level) * B)
            img = put(f, self.falx_hu)
        for x, y, lv, r, hu, el in self.calcs:
            z = np.clip(1 - abs(level - lv) * 130 / (r + self.thick / 2), 0, 1)
            if z > 0:
                m = self._e(x * A, y * B, r / el**0.5, r * el**0.5)
                img = img * (1 - m * z) + hu * m * z
        self.bleed_mask = None
        if bleed is not None:
            img = self._bleed(img, bleed, weight, A, B, depth, inner, marks, uy)
        if self.streaky or level < 0.22:
            img = self._streaks(img, inner, 3.0 if level < 0.22 else 1.0)
        return self._finish(img, noise)

    def _skull_base(self, img: F32, A: float, B: float, level: float) -> F32:
        """Petrous ridges, clivus, sphenoid sinus, mastoid air cells, a dark Hounsfield bar."""
        u = self.rng.uniform
        for side in (-1, 1):
            m = self._e(side * 0.45 * A, 0.05 * B, u(5, 8), 0.42 * A, side * u(0.7, 1.0))
            img = img * (1 - m) + u(1200, 2200) * m
            air = self._e(side * 0.72 * A, 0.18 * B, u(3, 7), u(3, 7)) * m
            img = img * (1 - air) + AIR * air
        clivus = self._e(0, -0.12 * B, u(6, 10), u(10, 16))
        img = img * (1 - clivus) + u(600, 1100) * clivus
        sinus = self._e(0, -0.32 * B, u(6, 12), u(5, 10))
        img = img * (1 - sinus) + AIR * sinus
        bar = self._e(0, 0.28 * B, 0.55 * A, u(2, 5)) * (img < 100)
        return (img - u(20, 70) * bar).astype(np.float32)

    def _streaks(self, img: F32, inner: F32, strength: float) -> F32:
        """Beam hardening: a few dark and bright lines through the brain."""
        rng, out = self.rng, np.zeros_like(img)
        for _ in range(rng.integers(2, 7)):
            ang, off = rng.uniform(0, np.pi), rng.uniform(-40, 40)
            d = (self.x - self.cx) * np.sin(ang) - (self.y - self.cy) * np.cos(ang) - off
            out += rng.uniform(-30, 20) * strength * np.exp(-0.5 * (d / rng.uniform(1, 3)) ** 2)
        return (img + out * inner * (img < 150)).astype(np.float32)

    def _bleed(self, img: F32, bl: Bleed, w: float, A: float, B: float, depth: F32, inner: F32,
               marks: dict[str, F32], uy: F32) -> F32:  # fmt: skip
        r = np.random.default_rng(bl.shape)  # same shape on each of its slices
        size, u = bl.size_mm * (0.7 + 0.3 * w), r.uniform
        ang = np.arctan2(self.y - self.cy, self.x - self.cx) - self.theta
        phi, span = u(0, 2 * np.pi), u(0.5, 1.8)
        near = np.clip(1 - np.abs(np.angle(np.exp(1j * (ang - phi)))) / (span / 2), 0, 1)
        if bl.kind == "epidural":  # lens against the inner table
            m = (depth < size * np.sqrt(near)) * (depth > -0.5) * (near > 0)
        elif bl.kind == "subdural":  # crescent, thin and long
            m = (depth < size * near**0.3) * (near > 0)
        elif bl.kind == "subarachnoid":  # dense sulci over a sector, or basal cisterns
            cistern = marks["cistern"].any() and u() < 0.6
            m = marks["cistern"] if cistern else marks["sulci"] * (near > 0)
            m = ndimage.grey_dilation(m, size=int(1 + size / 6 / self.pix))
        elif bl.kind == "intraventricular" and marks["ventricle"].any():
            m = marks["ventricle"] * (uy > u(0.05, 0.2) * B)  # layering in the posterior horns
        else:  # intraparenchymal, or intraventricular with no ventricle at this level
            dx, dy = u(-0.5, 0.5) * A, u(-0.5, 0.5) * B
            m = self._e(dx, dy, size / 2, size / 2 * u(0.6, 1.4), u(0, 3))
            m = np.clip(m + 0.3 * self._field(2) * (m > 0.05), 0, 1)
            img = img - u(0, 8) * self._e(dx, dy, size, size) * (1 - m) * inner
        m = np.clip(m.astype(np.float32), 0, 1) * np.clip(inner * 1.2, 0, 1)
        self.bleed_mask = np.ascontiguousarray(m[:, ::-1] if self.flip else m, np.float32)
        hu = bl.hu + 3 * self._field(2)
        mix = m * w
        return (img * (1 - mix) + hu * mix).astype(np.float32)

    def _finish(self, img: F32, noise: bool) -> F32:
        if self.sharp:  # edge enhancement: overshoot beside bone
            img = img + self.rng.uniform(0.4, 1.2) * (img - ndimage.gaussian_filter(img, 1.0))
        else:
            img = ndimage.gaussian_filter(img, self.kernel)
        if noise:
            white = self.rng.standard_normal(img.shape).astype(np.float32)
            img = img + self.noise * (0.6 * white + 1.2 * ndimage.gaussian_filter(white, 0.8))
        return np.ascontiguousarray(img[:, ::-1] if self.flip else img, dtype=np.float32)
