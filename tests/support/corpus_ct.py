"""CT QC corpus reconstructed by filtered back-projection (FBP) from simulated projections.

Every slice, clean or not, goes the way a scanner makes it: an object in HU becomes
attenuation (1/mm), parallel-beam line integrals (scikit-image ``radon``), photon counts
(Poisson at ``I0`` photons per ray plus electronic noise, floored at 1; ``I0`` is the dose
shared over the views, so the dose of a slice does not depend on its matrix), log, then
``kernels.ct.fbp_parallel`` with a reconstruction filter, back to HU, stored as 12- or
16-bit integers, with scanner padding outside the reconstruction circle (or none: a
square -1000 HU field). Artifacts are made in the projections where they arise:

- ring: gain offset on 3 detector channels (and their mirror channels) in every view;
- motion: the object moves rigidly by ``d`` mm from a random view on (inconsistent views);
- metal: dense discs whose exact chords are added, counts starve behind them;
- low_dose: I0 divided by 4 / 12 / 40;
- truncation: the patient (the largest object, not the couch) shifted so part of it lies
  outside the scan field; the detector
  misses those rays and the projection is tapered to zero, as scanners extend it;
- hu_offset: a calibration offset of 40 / 80 / 160 HU on everything inside the field.

:class:`CTParams` holds the generator parameters. :func:`fit_params` and
:func:`heldout_params` draw them from disjoint sets (matrices, filters, dose levels,
sources), so thresholds chosen on one are scored on acquisitions they never saw.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.data import get_testdata_file
from scipy import ndimage
from skimage.data import shepp_logan_phantom
from skimage.transform import radon, resize

from kernels.ct import fbp_parallel

F = NDArray[np.float32]
F64 = NDArray[np.float64]
MU_WATER = 0.0192  # 1/mm at ~70 keV effective energy
I0_REF = 4.0e5  # photons per 1 mm detector bin at the reference dose
REF_VIEWS = 307  # views of a 256^2 slice (_theta): I0_REF is the photons per ray there
ARTIFACTS = ("ring", "motion", "metal", "low_dose", "truncation", "hu_offset")


@dataclass(frozen=True)
class CTParams:
    source: str  # head_693 | head_j2k | head_sl | body_ph | body_real
    matrix: int  # reconstruction matrix (square)
    dose: float  # I0 factor against I0_REF
    filter: str  # FBP filter (kernels.ct: ramp, shepp-logan, cosine, hamming, hann)
    bits: int  # 12: stored -1024..3071; 16: -32768..32767
    pad: float | None  # HU outside the reconstruction circle; None = -1000 (no padding)


@dataclass(frozen=True)
class CTSlice:
    hu: F
    spacing: tuple[float, float]
    params: CTParams
    artifact: str
    severity: int


def _read(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name, download=False)
    if path is None:
        raise FileNotFoundError(f"{name} not in pydicom-data; pip install pydicom-data")
    return pydicom.dcmread(path)


def _hu_of(name: str) -> tuple[F64, float]:
    ds = _read(name)
    hu = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    return np.where(hu < -1024, -1000.0, hu).astype(np.float64), float(ds.PixelSpacing[0])


def _disc_mask(n: int, r: float) -> NDArray[np.bool_]:
    c = (n - 1) / 2.0
    yy, xx = np.mgrid[:n, :n]
    return np.asarray((yy - c) ** 2 + (xx - c) ** 2 < r * r)


def _body_phantom(n: int = 512) -> F64:
    """An abdomen: fat-rimmed body, liver, kidneys, spine, aorta, bowel gas; 380 mm field."""
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2.0) / (n / 2.0)  # -1..1 over the field

    def ell(cx: float, cy: float, a: float, b: float) -> NDArray[np.bool_]:
        return np.asarray(((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1.0)

    hu = np.full((n, n), -1000.0)
    hu[ell(0, 0.05, 0.86, 0.6)] = -100.0  # fat
    hu[ell(0, 0.05, 0.8, 0.54)] = 45.0  # muscle / soft tissue
    hu[ell(-0.35, -0.05, 0.32, 0.3)] = 60.0  # liver
    hu[ell(0.4, 0.1, 0.1, 0.14)] = 150.0  # kidney (contrast)
    hu[ell(-0.3, 0.25, 0.1, 0.14)] = 150.0
    hu[ell(0, 0.35, 0.11, 0.1)] = 700.0  # vertebral body
    hu[ell(0, 0.35, 0.07, 0.06)] = 250.0
    hu[ell(0.05, 0.15, 0.05, 0.05)] = 180.0  # aorta
    hu[ell(0.3, -0.25, 0.08, 0.06)] = -950.0  # bowel gas
    hu[ell(0, 0.86, 0.9, 0.03) & (yy > 0.84)] = 300.0  # table shell
    return hu


@functools.cache
def _source(name: str) -> tuple[F64, float]:
    """(HU image, field of view in mm) of a source object."""
    if name == "head_693":
        hu, px = _hu_of("693_UNCR.dcm")
    elif name == "head_j2k":
        hu, px = _hu_of("J2K_pixelrep_mismatch.dcm")
    elif name == "body_real":
        hu, px = _hu_of("explicit_VR-UN.dcm")
    elif name == "head_sl":
        p = resize(shepp_logan_phantom(), (512, 512), order=1)
        hu = np.interp(p, [0, 0.1, 0.2, 0.3, 0.4, 1.0], [-1000, 0, 30, 60, 80, 800])
        px = 250.0 / 512
    elif name == "body_ph":
        hu, px = _body_phantom(), 380.0 / 512
    else:
        raise ValueError(f"unknown CT source {name!r}")
    return hu, px * hu.shape[0]


def _theta(n: int) -> F64:
    return np.linspace(0.0, 180.0, max(180, int(n * 1.2)), endpoint=False)


def _mu(hu: F64, n: int, margin: float = 1.0) -> F64:
    """Attenuation per pixel of an n x n grid, zero outside the inscribed circle."""
    small = resize(hu, (n, n), order=1, anti_aliasing=True)
    mu = np.clip(MU_WATER * (1.0 + small / 1000.0), 0.0, None)
    mu[~_disc_mask(n, n / 2.0 - margin)] = 0.0
    out: F64 = mu
    return out


@functools.cache
def _clean_sino(source: str, n: int) -> tuple[F64, float]:
    """Noise-free line integrals (detectors, views) and the pixel size in mm."""
    hu, fov = _source(source)
    px = fov / n
    sino: F64 = radon(_mu(hu, n), _theta(n), circle=True) * px
    return sino, px


def _rng(seed: int, p: CTParams, artifact: str) -> np.random.Generator:
    key = zlib.crc32(f"{p.source}/{p.matrix}/{artifact}".encode())
    return np.random.default_rng([seed, key])


def _measure(sino: F64, i0: float, rng: np.random.Generator) -> F64:
    counts = rng.poisson(i0 * np.exp(-sino)).astype(np.float64)
    counts += rng.normal(0.0, 5.0, sino.shape)  # electronic noise
    out: F64 = -np.log(np.maximum(counts, 1.0) / i0)
    return out


def _shift_views(sino: F64, theta: F64, d_px: float, ang: float, start: int) -> F64:
    """Rigid shift by d_px pixels along direction ``ang`` in every view from ``start`` on."""
    out = sino.copy()
    det = np.arange(sino.shape[0], dtype=np.float64)
    for v in range(start, sino.shape[1]):
        s = d_px * np.cos(np.deg2rad(theta[v]) - ang)
        out[:, v] = np.interp(det - s, det, sino[:, v], left=0.0, right=0.0)
    return out


def _disc_chords(n_det: int, theta: F64, cy: float, cx: float, r: float) -> F64:
    """Exact chord lengths (pixels) of a disc at (row cy, col cx) from the centre, radius r."""
    t = np.arange(n_det)[:, None] - n_det // 2
    th = np.deg2rad(theta)[None, :]
    # skimage: detector t = x cos(theta) - y sin(theta) with x = col, y = row from the centre
    t0 = cx * np.cos(th) - cy * np.sin(th)
    out: F64 = 2.0 * np.sqrt(np.clip(r * r - (t - t0) ** 2, 0.0, None))
    return out


def _truncated(p: CTParams, sev: int, rng: np.random.Generator) -> tuple[F64, float, F64]:
    """Sinogram of the object shifted past the scan field; missing rays tapered to zero."""
    hu, fov = _source(p.source)
    n = p.matrix
    m = n // 2  # canvas margin each side
    big = np.pad(_mu(hu, n, margin=-n), m)  # keep the whole object: no circle cut
    # the patient is the largest connected object: a couch wider than the patient (the
    # real abdomen's) must not set the shift, or "22% of the object outside" cuts only it
    labels, n_obj = ndimage.label(big > 0.5 * MU_WATER)
    sizes = np.bincount(labels.ravel())[1:]
    patient = labels == 1 + int(np.argmax(sizes)) if n_obj else big > 0.5 * MU_WATER
    cols = np.nonzero(patient.any(axis=0))[0]
    frac = {1: 0.05, 2: 0.12, 3: 0.22}[sev] * rng.uniform(0.9, 1.1)
    shift = round(m + n - 0.5 - cols[-1] + frac * (cols[-1] - cols[0]))
    moved = np.roll(big, shift, axis=1)
    moved[~_disc_mask(2 * n, n - 1.0)] = 0.0
    px = fov / n
    theta = _theta(n)
    full: F64 = radon(moved, theta, circle=True) * px
    c = full.shape[0] // 2
    lo, hi = c - n // 2, c + n // 2 - 1
    taper = max(8, n // 10)
    out = full.copy()
    for i in range(full.shape[0]):
        d = lo - i if i < lo else i - hi if i > hi else 0
        if d:
            edge = full[lo] if i < lo else full[hi]
            out[i] = edge * (0.5 + 0.5 * np.cos(np.pi * d / taper)) if d < taper else 0.0
    return out, px, theta


def ct_slice(p: CTParams, artifact: str = "clean", severity: int = 0, seed: int = 0) -> CTSlice:
    """One reconstructed slice of source ``p.source`` with ``artifact`` at ``severity``."""
    rng = _rng(seed, p, artifact)
    n = p.matrix
    if artifact == "truncation":
        sino, px, theta = _truncated(p, severity, rng)
        crop = True
    else:
        sino, px = _clean_sino(p.source, n)
        theta = _theta(n)
        crop = False
    # photons per ray scale with the detector bin width, and the tube output (mAs) of one
    # rotation is shared by its views: more views, fewer photons each, the same dose
    i0 = I0_REF * p.dose * px * REF_VIEWS / len(theta)
    if p.source.startswith("body"):
        i0 *= 4.0  # exposure control: a body gets the tube current a head would need x4
    if artifact == "low_dose":
        i0 /= {1: 4.0, 2: 12.0, 3: 40.0}[severity]
    art = sino
    if artifact == "ring":
        art = sino.copy()
        amp = {1: 0.01, 2: 0.03, 3: 0.08}[severity]
        nd = sino.shape[0]
        for ch in rng.choice(np.arange(nd // 2 - nd // 3, nd // 2 - 3), size=3, replace=False):
            sign = rng.choice([-1.0, 1.0])
            art[ch] += amp * sign
            art[nd - 1 - ch] += amp * sign
    elif artifact == "motion":
        mm = {1: 1.0, 2: 3.0, 3: 6.0}[severity] * rng.uniform(0.9, 1.2)
        start = int(rng.integers(len(theta) // 4, 3 * len(theta) // 4))
        art = _shift_views(sino, theta, mm / px, rng.uniform(0, 2 * np.pi), start)
    elif artifact == "metal":
        n_disc, r_mm, mu_mm = {1: (1, 1.5, 0.4), 2: (2, 3.0, 0.8), 3: (2, 5.0, 1.2)}[severity]
        hu, _ = _source(p.source)
        inside = np.argwhere(resize(hu, (n, n), order=0) > 0) - (n - 1) / 2.0
        inside = inside[np.hypot(*inside.T) < 0.35 * n]
        art = sino.copy()
        for cy, cx in inside[rng.choice(len(inside), size=n_disc, replace=False)]:
            art += mu_mm * px * _disc_chords(sino.shape[0], theta, cy, cx, r_mm / px)
    meas = _measure(art, i0, rng)
    mu = fbp_parallel(meas, theta, filter=p.filter, output_size=meas.shape[0]) / px
    if crop:
        k = (mu.shape[0] - n) // 2
        mu = mu[k : k + n, k : k + n]
    hu_img = 1000.0 * (mu.astype(np.float64) - MU_WATER) / MU_WATER
    inside_fov = _disc_mask(n, n / 2.0 - 1.0)
    if artifact == "hu_offset":
        hu_img[inside_fov] += {1: 40.0, 2: 80.0, 3: 160.0}[severity] * rng.choice([-1.0, 1.0])
    lo, hi = (-1024.0, 3071.0) if p.bits == 12 else (-32768.0, 32767.0)
    hu_img = np.clip(np.round(hu_img), lo, hi)
    hu_img[~inside_fov] = p.pad if p.pad is not None else -1000.0
    return CTSlice(hu_img.astype(np.float32), (px, px), p, artifact, severity)


FIT_SOURCES = ("head_693", "body_ph")
HELDOUT_SOURCES = ("head_sl", "body_real", "head_j2k")
FIT_MATRICES = (128, 256, 512)
HELDOUT_MATRICES = (192, 320, 384)
FIT_FILTERS = ("ramp", "shepp-logan", "hann")
HELDOUT_FILTERS = ("cosine", "hamming")
FIT_DOSES = (0.6, 1.0, 1.6)
HELDOUT_DOSES = (0.75, 1.25, 2.0)


def _draw(
    seed: int, sources: tuple[str, ...], matrices: tuple[int, ...], filters: tuple[str, ...],
    doses: tuple[float, ...],
) -> CTParams:  # fmt: skip
    r = np.random.default_rng([seed, 7919])
    return CTParams(
        source=str(r.choice(sources)),
        matrix=int(r.choice(matrices)),
        dose=float(r.choice(doses)),
        filter=str(r.choice(filters)),
        bits=int(r.choice([12, 16])),
        pad=[-3024.0, -2048.0, None][int(r.integers(3))],
    )


def fit_params(seed: int) -> CTParams:
    return _draw(seed, FIT_SOURCES, FIT_MATRICES, FIT_FILTERS, FIT_DOSES)


def heldout_params(seed: int) -> CTParams:
    return _draw(seed, HELDOUT_SOURCES, HELDOUT_MATRICES, HELDOUT_FILTERS, HELDOUT_DOSES)


def series(
    p: CTParams, artifact: str, severity: int, seed: int, n_slices: int = 3
) -> list[CTSlice]:
    """A short series: ``n_slices`` noise realisations of one acquisition."""
    return [ct_slice(p, artifact, severity, seed * 1000 + i) for i in range(n_slices)]


def _meta(s: CTSlice) -> dict[str, Any]:
    return {"modality": "CT", "spacing": s.spacing, "source": s.params.source}
