"""Labelled artifact corpus for the QC metrics, generated at test time.

Every sample starts from a real image (pydicom-data CT, MR, CR) or the
Shepp-Logan phantom, and each artifact is simulated where it arises:

- CT: in the sinogram (parallel beam, scikit-image radon/iradon at 256^2):
  detector gain errors (rings), view-dependent object shifts (motion),
  photon starvation behind dense discs (metal), Poisson counts at a lower
  I0 (low dose), a narrow detector (truncation), plus an HU offset
  (miscalibration). Only the artifact, iradon(sino_artifact - sino_clean), is
  reconstructed at 256^2 and added, upsampled, to the 512^2 image, so the
  anatomy keeps its full resolution.
- MR: in k-space of the magnitude image: alternate-line phase errors
  (N/2 ghosting), per-line translations (motion), single-point spikes, a
  fixed-frequency RF line (zipper), complex Gaussian noise (Rician magnitude),
  and folding along phase encode (wrap-around, reduced FOV).
- DX: in detector signal: dose scaled with EI/DI tags to match (over/under
  exposure), a saturating detector, collimator shutters, motion blur.

A sample is ``Sample(image, meta, label)`` with ``label.artifact`` ("clean"
or an artifact name) and ``label.severity`` (0 clean, 1 mild, 2 moderate,
3 severe). ``seed`` makes each sample reproducible.

Sources that could not be used: deid-data's ``humans/ctbrain*.dcm`` are 8-bit
RGB drawings (a smiley face), not CT data, and deid-data ships no DX image
with exposure-index tags; so DX uses pydicom-data's RG1_UNCI.dcm with EI tags
written by the generator.
"""

from __future__ import annotations

import functools
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.data import get_testdata_file
from scipy import ndimage
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, radon, resize

F = NDArray[np.float32]
SEVERITIES = {1: "mild", 2: "moderate", 3: "severe"}
MU_WATER = 0.0192  # 1/mm at ~70 keV effective energy
PAD = -3024.0
I0_REF = 2.0e5  # photons per ray at the reference dose
N_VIEWS = 180


@dataclass(frozen=True)
class Label:
    artifact: str
    severity: int


@dataclass(frozen=True)
class Sample:
    image: F
    meta: dict[str, Any] = field(default_factory=dict)
    label: Label = Label("clean", 0)


def _rng(seed: int, src: int, artifact: str) -> np.random.Generator:
    """One stream per (seed, source, artifact); crc32 is stable across runs.

    Severity is deliberately not part of the key: the three severities of one
    seed share geometry (ring channels, metal positions, motion onset) and
    noise, and differ only in amplitude, so a grading is a grading.
    """
    return np.random.default_rng([seed, src, zlib.crc32(artifact.encode())])


def _read(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name, download=False)
    if path is None:
        raise FileNotFoundError(f"{name} not in pydicom-data; pip install pydicom-data")
    return pydicom.dcmread(path)


def _deid_ctbrain_usable() -> bool:
    """True if deid-data's ctbrain1.dcm is a real CT slice (it is an RGB drawing)."""
    import deid_data  # type: ignore[import-untyped]

    path = os.path.join(os.path.dirname(deid_data.__file__), "data", "humans", "ctbrain1.dcm")
    ds = pydicom.dcmread(path)
    return ds.get("SamplesPerPixel", 1) == 1 and int(ds.get("BitsStored", 8)) > 8


# --- CT ----------------------------------------------------------------------


@dataclass(frozen=True)
class CTSource:
    name: str
    hu: F  # 512^2, padding outside the FOV circle
    spacing: float  # mm


@functools.cache
def ct_sources() -> tuple[CTSource, ...]:
    ds = _read("693_UNCI.dcm")
    hu = (ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)).astype(np.float32)
    real = CTSource("693_UNCI", hu, float(ds.PixelSpacing[0]))
    return (real, CTSource("shepp_logan", _ct_phantom(), 0.5))


def _ct_phantom() -> F:
    """Shepp-Logan in HU: skull 800, brain 30-80, air -1000, padded FOV circle."""
    p = resize(shepp_logan_phantom(), (512, 512), order=1)
    hu = np.interp(p, [0, 0.1, 0.2, 0.3, 0.4, 1.0], [-1000, 0, 30, 60, 80, 800])
    return _pad_circle(hu.astype(np.float32), PAD)


def _circle(n: int, r: float | None = None) -> NDArray[np.bool_]:
    c = (n - 1) / 2.0
    yy, xx = np.mgrid[:n, :n]
    return (yy - c) ** 2 + (xx - c) ** 2 < (r if r is not None else n / 2.0) ** 2


def _pad_circle(hu: F, pad: float) -> F:
    out = hu.copy()
    out[~_circle(hu.shape[0])] = pad
    return out


def _mu256(hu: F, spacing: float) -> NDArray[np.float64]:
    """Attenuation per 256-grid pixel (line integrals come out dimensionless)."""
    air = np.where(hu < -1500, -1000.0, hu)
    small = air.reshape(256, 2, 256, 2).mean(axis=(1, 3))
    mu = np.clip(MU_WATER * (1.0 + small / 1000.0), 0.0, None) * (2.0 * spacing)
    mu[~_circle(256, 127.0)] = 0.0  # skimage's own circle test is a pixel tighter
    return mu


def _theta() -> NDArray[np.float64]:
    return np.linspace(0.0, 180.0, N_VIEWS, endpoint=False)


@functools.cache
def _sino_ref(index: int) -> NDArray[np.float64]:
    src = ct_sources()[index]
    out: NDArray[np.float64] = radon(_mu256(src.hu, src.spacing), _theta(), circle=True)
    return out


def _counts(sino: NDArray[np.float64], i0: float, rng: np.random.Generator) -> NDArray[np.float64]:
    """Measured line integrals: Poisson counts plus electronic noise, floored at 1."""
    n = rng.poisson(i0 * np.exp(-sino)).astype(np.float64) + rng.normal(0.0, 3.0, sino.shape)
    return -np.log(np.maximum(n, 1.0) / i0)


def _add_recon(hu: F, spacing: float, dsino: NDArray[np.float64], circle: bool = True) -> F:
    """Add the reconstruction of a sinogram difference (in HU, upsampled x2) to ``hu``."""
    d = iradon(dsino, _theta(), circle=circle, filter_name="ramp", output_size=256)
    d_hu = d / (MU_WATER * 2.0 * spacing) * 1000.0
    up = ndimage.zoom(d_hu, 2, order=1)
    fov = hu > -1500
    out = np.where(fov, np.clip(hu + up, -1024.0, 3071.0), hu)
    return out.astype(np.float32)


def _ct_rings(sino: NDArray[np.float64], sev: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """Gain error on a few detector channels: the same log-offset in every view."""
    out = sino.copy()
    amp = {1: 0.01, 2: 0.03, 3: 0.08}[sev]
    n = sino.shape[0]
    # A fan-beam channel over 360 degrees is a parallel channel at +s and -s over
    # 180: offsetting both mirror channels draws a full ring, not a half one.
    for ch in rng.choice(np.arange(n // 2 - n // 3, n // 2 - 4), size=3, replace=False):
        sign = rng.choice([-1.0, 1.0])
        out[ch, :] += amp * sign
        out[n - 1 - ch, :] += amp * sign
    return out


def _ct_motion(
    sino: NDArray[np.float64], sev: int, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Rigid shift by ``amp`` pixels from a random view on: shifts each projection by d.n(theta)."""
    amp = {1: 1.0, 2: 2.5, 3: 5.0}[sev]
    ang = rng.uniform(0, 2 * np.pi)
    start = rng.integers(N_VIEWS // 4, 3 * N_VIEWS // 4)
    out = sino.copy()
    th = np.deg2rad(_theta())
    for v in range(start, N_VIEWS):
        s = amp * np.cos(th[v] - ang)
        out[:, v] = ndimage.shift(sino[:, v], s, order=1, mode="nearest")
    return out


def _ct_metal(
    mu: NDArray[np.float64], sev: int, rng: np.random.Generator, spacing: float
) -> NDArray[np.float64]:
    """Sinogram of dense discs placed inside the body (radius mm, mu 1/mm)."""
    n_disc, r_mm, mu_mm = {1: (1, 1.5, 0.5), 2: (2, 3.0, 1.0), 3: (2, 5.0, 1.5)}[sev]
    body = np.argwhere(ndimage.binary_erosion(mu > 0.5 * MU_WATER * 2 * spacing, iterations=12))
    yy, xx = np.mgrid[:256, :256]
    disc = np.zeros((256, 256))
    px = 2.0 * spacing
    for y, x in body[rng.choice(len(body), size=n_disc, replace=False)]:
        disc[(yy - y) ** 2 + (xx - x) ** 2 <= (r_mm / px) ** 2] = mu_mm * px
    out: NDArray[np.float64] = radon(disc, _theta(), circle=True)
    return out


def ct_sample(src_index: int, artifact: str, severity: int, seed: int) -> Sample:
    """One CT slice with ``artifact`` at ``severity`` (0 = clean), reproducible from ``seed``."""
    src = ct_sources()[src_index]
    rng = _rng(seed, src_index, artifact)
    hu, sino = src.hu, _sino_ref(src_index)
    meas_i0 = I0_REF
    art = sino
    if artifact == "truncation":
        return _ct_truncation(src, severity, rng)
    if artifact == "ring":
        art = _ct_rings(sino, severity, rng)
    elif artifact == "motion":
        art = _ct_motion(sino, severity, rng)
    elif artifact == "metal":
        art = sino + _ct_metal(_mu256(src.hu, src.spacing), severity, rng, src.spacing)
    elif artifact == "low_dose":
        meas_i0 = I0_REF / {1: 4.0, 2: 12.0, 3: 40.0}[severity]
    out = _add_recon(hu, src.spacing, _counts(art, meas_i0, rng) - sino)
    if artifact == "hu_offset":
        off = {1: 40.0, 2: 80.0, 3: 160.0}[severity] * rng.choice([-1.0, 1.0])
        out = np.where(out > -1500, out + off, out).astype(np.float32)
    return Sample(
        out,
        {"modality": "CT", "source": src.name, "spacing": (src.spacing, src.spacing)},
        Label(artifact, severity),
    )


def _ct_truncation(src: CTSource, sev: int, rng: np.random.Generator) -> Sample:
    """Patient off-centre beyond the scan FOV: the detector misses the outer rays.

    The body is shifted right until its edge lies ``frac`` of its width beyond
    the FOV circle, on a canvas padded by 106 pixels so nothing is lost. Rays
    outside the 512-pixel FOV are not measured (zero), which is what the
    scanner's reconstruction sees.
    """
    m = 106
    air = np.pad(np.where(src.hu < -1500, -1000.0, src.hu), m, constant_values=-1000.0)
    body = ndimage.binary_opening(air > -500, iterations=4)  # drop the thin table/holder shell
    cols = np.nonzero(body.any(axis=0))[0]
    frac = {1: 0.05, 2: 0.12, 3: 0.22}[sev] * rng.uniform(0.9, 1.1)
    fov_right = m + 511.5
    shift = fov_right - cols[-1] + frac * (cols[-1] - cols[0])
    moved = ndimage.shift(air, (0, shift), order=0, cval=-1000.0).astype(np.float32)
    full = radon(_mu_any(moved, src.spacing), _theta(), circle=True)
    c = (full.shape[0] - 1) / 2.0
    meas = _truncate_detector(_counts(full, I0_REF, rng), c, 128.0)
    d = iradon(meas - full, _theta(), circle=True, filter_name="ramp", output_size=full.shape[0])
    k = m // 2
    up = ndimage.zoom(d[k:-k, k:-k] / (MU_WATER * 2.0 * src.spacing) * 1000.0, 2, order=1)
    inner = moved[m:-m, m:-m]
    out = _pad_circle(np.clip(inner + up, -1024.0, 3071.0).astype(np.float32), PAD)
    meta = {"modality": "CT", "source": src.name, "spacing": (src.spacing, src.spacing)}
    return Sample(out, meta, Label("truncation", sev))


def _truncate_detector(sino: NDArray[np.float64], c: float, half: float) -> NDArray[np.float64]:
    """Keep the bins a detector of half-width ``half`` sees; extrapolate beyond it.

    Scanners do not reconstruct truncated projections as if the missing rays
    were air; they extend each projection smoothly to zero. A cosine taper over
    24 bins from the edge value is the simplest such extension.
    """
    out = sino.copy()
    idx = np.arange(sino.shape[0])
    lo, hi = int(np.ceil(c - half)), int(np.floor(c + half))
    taper = 24
    for i in idx:
        d = lo - i if i < lo else i - hi if i > hi else 0
        if d == 0:
            continue
        edge = sino[lo] if i < lo else sino[hi]
        out[i] = edge * (0.5 + 0.5 * np.cos(np.pi * d / taper)) if d < taper else 0.0
    return out


def _mu_any(hu: NDArray[np.floating[Any]], spacing: float) -> NDArray[np.float64]:
    """Attenuation per 2x2-binned pixel of any even-sized HU canvas, zero outside its circle."""
    n = hu.shape[0] // 2
    small = hu.reshape(n, 2, n, 2).mean(axis=(1, 3))
    mu = np.clip(MU_WATER * (1.0 + small / 1000.0), 0.0, None) * (2.0 * spacing)
    mu[~_circle(n, n / 2.0 - 1.0)] = 0.0  # skimage's own circle test is a pixel tighter
    out: NDArray[np.float64] = mu
    return out


CT_ARTIFACTS = ("ring", "motion", "metal", "low_dose", "truncation", "hu_offset")


def ct_artifacts(src_index: int) -> tuple[str, ...]:
    """Artifacts simulated on a source.

    The phantom gets no truncation: its outer ellipse nearly fills the FOV
    vertically, so any lateral shift cuts it over a long arc at once and the
    cut does not grow with the shift; the head CT grades properly.
    """
    return CT_ARTIFACTS if src_index == 0 else tuple(a for a in CT_ARTIFACTS if a != "truncation")


def ct_corpus(seeds: list[int], sources: tuple[int, ...] = (0, 1)) -> Iterator[Sample]:
    for seed in seeds:
        for s in sources:
            yield ct_sample(s, "clean", 0, seed)
            for art in ct_artifacts(s):
                for sev in (1, 2, 3):
                    yield ct_sample(s, art, sev, seed)


# --- MR ----------------------------------------------------------------------

MR_ARTIFACTS = ("ghosting", "motion", "spike", "zipper", "noise", "wrap")


@functools.cache
def mr_sources() -> tuple[tuple[str, F, int], ...]:
    """(name, magnitude image, pe_axis). MR2 is binned 2x2 to 512^2 to keep runs short."""
    ds = _read("MR2_UNCI.dcm")
    a = ds.pixel_array.astype(np.float32)
    real = a.reshape(512, 2, 512, 2).mean(axis=(1, 3))
    pe = 0 if str(ds.InPlanePhaseEncodingDirection).upper() == "COL" else 1
    p = resize(shepp_logan_phantom(), (256, 256), order=1).astype(np.float32) * 600.0
    return (("MR2_UNCI", real, pe), ("shepp_logan", p, 1))


def _pe_lines(k: NDArray[np.complex128], pe: int) -> NDArray[np.complex128]:
    """View k-space with phase-encode lines on axis 0."""
    return k if pe == 0 else k.T


def mr_sample(src_index: int, artifact: str, severity: int, seed: int) -> Sample:
    name, img, pe = mr_sources()[src_index]
    rng = _rng(seed, 100 + src_index, artifact)
    if artifact == "wrap":
        return Sample(
            _mr_wrap(img, pe, severity),
            {"modality": "MR", "pe_axis": pe, "source": name},
            Label(artifact, severity),
        )
    base = img.astype(np.complex128)
    if name == "shepp_logan":  # a noiseless phantom is not an MR image: Rician floor of 1%
        base = base + 6.0 * (rng.standard_normal(img.shape) + 1j * rng.standard_normal(img.shape))
    k = np.fft.fft2(base)
    kv = _pe_lines(k, pe)  # a view: edits land in k
    n_pe, n_ro = kv.shape
    ky = np.fft.fftfreq(n_pe) * n_pe
    kx = np.fft.fftfreq(n_ro) * n_ro
    fg_mean = float(img[img > img.mean()].mean())
    if artifact == "ghosting":  # alternating-line phase error: N/2 ghost
        kv[1::2, :] *= np.exp(1j * {1: 0.15, 2: 0.35, 3: 0.8}[severity])
    elif artifact == "motion":  # translations in random blocks of PE lines
        amp = {1: 1.0, 2: 3.0, 3: 8.0}[severity]
        hit = rng.random(n_pe) < 0.35
        d_ro = amp * rng.uniform(-1, 1, n_pe)
        d_pe = amp * rng.uniform(-1, 1, n_pe)
        ph = np.exp(
            -2j
            * np.pi
            * (np.outer(d_pe, ky).diagonal()[:, None] / n_pe + d_ro[:, None] * kx[None, :] / n_ro)
        )
        kv[hit] *= ph[hit]
    elif artifact == "spike":  # one corrupt k-space sample, away from the centre
        r = rng.uniform(0.15, 0.4)
        a = rng.uniform(0, 2 * np.pi)
        y, x = int(r * n_pe * np.sin(a)) % n_pe, int(r * n_ro * np.cos(a)) % n_ro
        kv[y, x] += {1: 0.01, 2: 0.05, 3: 0.25}[severity] * abs(kv[0, 0]) * np.exp(1j * a)
    elif artifact == "zipper":  # RF at one readout frequency in every PE line, random phase
        x0 = rng.integers(n_ro // 8, 7 * n_ro // 8)
        amp = {1: 0.01, 2: 0.03, 3: 0.1}[severity] * fg_mean * n_ro
        phase = np.exp(2j * np.pi * rng.random(n_pe))
        kv += amp * phase[:, None] * np.exp(-2j * np.pi * kx[None, :] * x0 / n_ro)
    elif artifact == "noise":  # complex Gaussian: Rician magnitude
        sd = {1: 0.03, 2: 0.08, 3: 0.2}[severity] * fg_mean
        k += np.fft.fft2(
            sd * (rng.standard_normal(img.shape) + 1j * rng.standard_normal(img.shape))
        )
    out = np.abs(np.fft.ifft2(k)).astype(np.float32)
    return Sample(out, {"modality": "MR", "pe_axis": pe, "source": name}, Label(artifact, severity))


def _mr_wrap(img: F, pe: int, sev: int) -> F:
    """Fold along PE: a field of view shorter than the object (wrap-around / aliasing).

    The PE field of view is cut so that 4/10/20% of the object's extent on each
    side lies outside it; what lies outside folds onto the opposite side.
    """
    x = img if pe == 0 else img.T
    rows = np.nonzero((x > 0.2 * x.max()).any(axis=1))[0]
    ext = rows[-1] - rows[0]
    cut = {1: 0.04, 2: 0.10, 3: 0.20}[sev]
    lo = max(1, int(rows[0] + cut * ext))
    hi = min(x.shape[0] - 1, int(rows[-1] - cut * ext))
    m = hi - lo
    out = x[lo:hi].astype(np.float64)
    for start in range(0, lo):  # lines above the FOV fold onto its bottom
        out[(start - lo) % m] += x[start]
    for end in range(hi, x.shape[0]):  # lines below fold onto its top
        out[(end - lo) % m] += x[end]
    res = out.astype(np.float32)
    return res if pe == 0 else res.T.copy()


def mr_corpus(seeds: list[int], sources: tuple[int, ...] = (0, 1)) -> Iterator[Sample]:
    for seed in seeds:
        for s in sources:
            yield mr_sample(s, "clean", 0, seed)
            for art in MR_ARTIFACTS:
                for sev in (1, 2, 3):
                    yield mr_sample(s, art, sev, seed)


# --- DX ----------------------------------------------------------------------

DX_ARTIFACTS = ("overexposure", "underexposure", "saturation", "collimation", "motion")
DX_TARGET_EI = 400.0
DX_BITS = 15


@functools.cache
def dx_source() -> F:
    """RG1_UNCI.dcm (CR chest, 15 bits stored), binned 2x2 to keep runs short."""
    a = _read("RG1_UNCI.dcm").pixel_array.astype(np.float32)
    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    return a[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def dx_sample(artifact: str, severity: int, seed: int) -> Sample:
    """A CR chest with tags {ExposureIndex, TargetExposureIndex, BitsStored}.

    Pixels are treated as linear in detector dose: dose scaled by f scales the
    signal by f and the quantum noise by sqrt(f). The EI tag moves with it.
    """
    rng = _rng(seed, 200, artifact)
    img = dx_source().astype(np.float64)
    top = 2.0**DX_BITS - 1
    di = rng.uniform(-0.8, 0.8)
    if artifact == "overexposure":
        di = {1: 2.0, 2: 4.0, 3: 7.0}[severity]
    elif artifact == "underexposure":
        di = -{1: 2.0, 2: 4.0, 3: 7.0}[severity]
    f = 10.0 ** (di / 10.0)
    sig = img * f
    if artifact == "motion":  # blur the signal, not the noise added after
        length = {1: 4, 2: 10, 3: 20}[severity]
        k = np.zeros((length * 2 + 1, length * 2 + 1))
        ang = rng.uniform(0, np.pi)
        for t in np.linspace(-length, length, 4 * length + 1):
            k[round(length + t * np.sin(ang)), round(length + t * np.cos(ang))] = 1.0
        sig = ndimage.convolve(sig, k / k.sum(), mode="nearest")
    sig = sig + rng.normal(0.0, 1.0, sig.shape) * np.sqrt(np.maximum(sig, 0.0) * 0.5)
    if artifact == "saturation":  # detector full well below the signal in the brightest areas
        q = {1: 99.0, 2: 95.0, 3: 85.0}[severity]
        sig = sig * (top / np.percentile(sig, q))
    if artifact == "collimation":
        frac = {1: 0.04, 2: 0.10, 3: 0.20}[severity]
        for side in rng.choice(4, size=2, replace=False):
            n = int(frac * (sig.shape[0] if side < 2 else sig.shape[1]))
            sl = [slice(None), slice(None)]
            sl[side // 2] = slice(0, n) if side % 2 == 0 else slice(-n, None)
            sig[tuple(sl)] = 0.04 * np.median(sig) + rng.normal(0, 20.0, sig[tuple(sl)].shape)
    pix = np.clip(np.round(sig), 0, top).astype(np.float32)
    tags = {
        "ExposureIndex": DX_TARGET_EI * f,
        "TargetExposureIndex": DX_TARGET_EI,
        "BitsStored": DX_BITS,
    }
    return Sample(
        pix, {"modality": "DX", "tags": tags, "source": "RG1_UNCI"}, Label(artifact, severity)
    )


def dx_corpus(seeds: list[int]) -> Iterator[Sample]:
    for seed in seeds:
        yield dx_sample("clean", 0, seed)
        for art in DX_ARTIFACTS:
            for sev in (1, 2, 3):
                yield dx_sample(art, sev, seed)
