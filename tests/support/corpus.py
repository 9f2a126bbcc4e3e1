"""Labelled artifact corpus for the QC metrics, generated at test time.

Every sample starts from a real image (pydicom-data CT, MR, CR) or the
Shepp-Logan phantom, and each artifact is simulated where it arises:

- CT: slices reconstructed by FBP from simulated projections, artifacts made in
  the projections (tests/support/corpus_ct.py; ``ct_sample`` wraps it).
- MR: in k-space of the magnitude image: alternate-line phase errors
  (N/2 ghosting), per-line translations (motion), single-point spikes, a
  fixed-frequency RF line (zipper), complex Gaussian noise (Rician magnitude),
  and folding along phase encode (wrap-around, reduced FOV).
- DX: in detector signal: dose scaled with EI/DI tags to match (over/under
  exposure), a saturating detector, collimator shutters, motion blur.

A sample is ``Sample(image, meta, label)`` with ``label.artifact`` ("clean"
or an artifact name) and ``label.severity`` (0 clean, 1 mild, 2 moderate,
3 severe). ``seed`` makes each sample reproducible.

Sources: deid-data's ``humans/ctbrain*.dcm`` are 8-bit RGB drawings, not CT
data, so they are not used. deid-data's ``animals/cat.dcm`` is a DX with
exposure-index tags, but over-exposed by them (DI +2.4); DX therefore uses
pydicom-data's RG1_UNCI.dcm with EI tags written by the generator.
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
from skimage.transform import resize

from tests.support import corpus_ct as K

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
# CT slices come from tests/support/corpus_ct.py (FBP from simulated projections); this
# wrapper keeps the Sample interface that tests/support/qc_series.py writes as DICOM.

CT_PARAMS = (
    K.CTParams("head_693", 256, 1.0, "ramp", 16, -3024.0),  # 693_UNCR, the real head
    K.CTParams("head_sl", 256, 1.0, "ramp", 16, -3024.0),  # the Shepp-Logan head
)
CT_ARTIFACTS = K.ARTIFACTS


def ct_sample(src_index: int, artifact: str, severity: int, seed: int) -> Sample:
    """One FBP CT slice with ``artifact`` at ``severity`` (0 = clean), from ``seed``."""
    s = K.ct_slice(CT_PARAMS[src_index], artifact, severity, seed)
    meta = {"modality": "CT", "source": s.params.source, "spacing": s.spacing}
    return Sample(s.hu, meta, Label(artifact, severity))


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


@functools.cache
def _mr_source(src_index: int, scale: float) -> tuple[str, F, int]:
    """A source resized to ``scale`` times its matrix (anti-aliased): a smaller acquisition."""
    name, img, pe = mr_sources()[src_index]
    if scale == 1.0:
        return name, img, pe
    shape = (round(img.shape[0] * scale), round(img.shape[1] * scale))
    return name, resize(img, shape, order=1, anti_aliasing=True).astype(np.float32), pe


def mr_sample(
    src_index: int, artifact: str, severity: int, seed: int, scale: float = 1.0
) -> Sample:
    """One MR magnitude image; ``scale`` resizes the clean source first, so every artifact
    is made in the k-space of the matrix that is measured (a resize after the artifact
    would low-pass a spike or zipper away and leave a mislabelled clean image)."""
    name, img, pe = _mr_source(src_index, scale)
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
    elif artifact == "noise":  # complex Gaussian: Rician magnitude, SNR about 10 / 6 / 3.5
        sd = {1: 0.1, 2: 0.17, 3: 0.3}[severity] * fg_mean
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
