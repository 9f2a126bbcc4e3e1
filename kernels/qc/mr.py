"""Per-image MR quality metrics on a 2D magnitude image.

``pe_axis`` is the array axis along which phase is encoded: DICOM
InPlanePhaseEncodingDirection "COL" means phase varies down a column, i.e.
along axis 0 (rows index); "ROW" means axis 1 (see :func:`pe_axis_from_tag`).
Ghosts, wrap-around and motion smear along that axis.

These run in numpy/scipy: each is a handful of whole-array operations that
are already vectorised (FFT, filters), so Numba would not speed them up.
Foreground is an Otsu threshold, opened; background air is everything at
least 5 pixels from the foreground.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from kernels.qc._common import F32, as_image, robust_z

Mask = NDArray[np.bool_]
DIETRICH = math.sqrt((4.0 - math.pi) / 2.0)  # std of a Rayleigh variable with sigma = 1


def pe_axis_from_tag(direction: str) -> int:
    """Array axis of phase encoding from InPlanePhaseEncodingDirection (COL -> 0, ROW -> 1)."""
    d = direction.strip().upper()
    if d not in ("ROW", "COL"):
        raise ValueError(f"InPlanePhaseEncodingDirection must be ROW or COL, got {direction!r}")
    return 0 if d == "COL" else 1


def _axis(pe_axis: int) -> int:
    if pe_axis not in (0, 1):
        raise ValueError(f"pe_axis must be 0 or 1, got {pe_axis!r}")
    return pe_axis


def otsu(img: F32) -> float:
    """Otsu threshold over a 256-bin histogram (maximum between-class variance)."""
    hist, edges = np.histogram(img, bins=256)
    mids = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * mids)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    return float(mids[int(np.argmax(w0 * w1 * (mu0 - mu1) ** 2))])


def masks(img: F32) -> tuple[Mask, Mask]:
    """(foreground, air).

    Foreground: above the Otsu threshold, opened twice. Air: at least 5 px
    from the foreground and below 3x the median of those pixels: Rayleigh air
    lies below 3x its median 99.8% of the time, while dark tissue (muscle,
    bone) that Otsu left out of the foreground sits above it.
    """
    fg = ndimage.binary_opening(img > otsu(img), iterations=2)
    rest = ~ndimage.binary_dilation(fg, iterations=5)
    if rest.sum() < 64:
        return fg, rest
    return fg, rest & (img <= 3.0 * float(np.median(img[rest])))


def ghost_ratio(img: object, pe_axis: int) -> float:
    """Ghost-to-signal ratio along phase encode (MRIQC ``gsr``, Giannelli et al. 2010).

    GSR = (mean(ghost) - mean(non-ghost air)) / median(foreground), where the
    ghost region is the foreground shifted by N/2 along phase encode, outside
    the (dilated) object. N/2 ghosts come from alternating-line errors (EPI
    Nyquist ghosts, periodic motion).
    """
    x = as_image(img)
    ax = _axis(pe_axis)
    fg, air = masks(x)
    far = ~ndimage.binary_dilation(fg, iterations=5)  # a strong ghost is not "air"
    ghost = np.roll(fg, x.shape[ax] // 2, axis=ax) & far
    rest = air & ~ghost
    if ghost.sum() < 10 or rest.sum() < 10 or not fg.any():
        return float("nan")
    return float((x[ghost].mean() - x[rest].mean()) / np.median(x[fg]))


def efc(img: object) -> float:
    """Entropy focus criterion, MRIQC definition (Atkinson et al., IEEE TMI 1997).

    EFC = sum(x/xmax * ln(x/xmax)) / (N * (1/sqrt(N)) * ln(1/sqrt(N))),
    xmax = sqrt(sum x^2), N = number of pixels; 1 = uniform (all blurred/ghosted),
    lower = more energy concentrated in sharp structure.
    """
    x = np.abs(as_image(img)).astype(np.float64).ravel()
    n = x.size
    cc = math.sqrt(float(np.sum(x * x)))
    if cc == 0.0:
        return float("nan")
    efc_max = n * (1.0 / math.sqrt(n)) * math.log(1.0 / math.sqrt(n))
    r = x / cc
    return float(np.sum(r * np.log(r + 1e-16)) / efc_max)


def _grad(x: F32) -> NDArray[np.float64]:
    g: NDArray[np.float64] = np.hypot(
        ndimage.sobel(x, 0, output=np.float64), ndimage.sobel(x, 1, output=np.float64)
    )
    return g


def gradient_entropy(img: object) -> float:
    """Gradient entropy (McGee et al., JMRI 2000), normalised by ln(N) to 0..1.

    h = |grad| / sum |grad| (Sobel); GE = -sum h ln h / ln N. Motion and
    ghosting spread edges over more pixels: the entropy rises.
    """
    g = _grad(as_image(img)).ravel()
    s = g.sum()
    if s <= 0:
        return float("nan")
    h = g[g > 0] / s
    return float(-np.sum(h * np.log(h)) / math.log(g.size))


def edge_strength(img: object) -> float:
    """Average edge strength (after Aksoy et al., MRM 2012): lower = blurrier.

    Mean Sobel magnitude over the strongest 10% of foreground gradients,
    divided by the median foreground intensity so it does not scale with gain.
    """
    x = as_image(img)
    fg, _ = masks(x)
    if fg.sum() < 20:
        return float("nan")
    g = _grad(x)[fg]
    top = g[g >= np.percentile(g, 90)]
    return float(top.mean() / max(float(np.median(x[fg])), 1e-12))


def fber(img: object) -> float:
    """Foreground-background energy ratio, MRIQC: median(|fg|^2) / median(|air|^2)."""
    x = as_image(img)
    fg, air = masks(x)
    if not fg.any() or not air.any():
        return float("nan")
    bg = float(np.median(x[air] ** 2))
    return float(np.median(x[fg] ** 2) / bg) if bg > 1e-6 else float("inf")


def snr_dietrich(img: object) -> float:
    """SNR from air (Dietrich et al., JMRI 2007; MRIQC ``snrd``).

    Magnitude air is Rayleigh: its SD is sigma * sqrt((4 - pi) / 2) = 0.655 sigma.
    SNR = mean(fg) / sigma = sqrt((4 - pi)/2) * mean(fg) / SD(air).
    """
    x = as_image(img)
    fg, air = masks(x)
    if air.sum() < 10 or not fg.any():
        return float("nan")
    sd = float(x[air].std())
    return float(DIETRICH * x[fg].mean() / sd) if sd > 0 else float("inf")


def wrap_fraction(img: object, pe_axis: int) -> float:
    """Fraction of readout positions with signal at both phase-encode edges.

    Anatomy outside the PE field of view folds onto the opposite side, so an
    aliased image carries signal into the first and last PE lines at the same
    readout positions; anatomy that merely fills the FOV usually touches one
    edge only. Edge band = 2% of the PE lines; signal = band mean > Otsu.
    """
    x = as_image(img)
    ax = _axis(pe_axis)
    k = max(2, x.shape[ax] // 50)
    t = 0.5 * otsu(x)  # half: Otsu may split bright from mid tissue, and mid tissue counts
    lo = np.take(x, np.arange(k), axis=ax).mean(axis=ax)
    hi = np.take(x, np.arange(x.shape[ax] - k, x.shape[ax]), axis=ax).mean(axis=ax)
    return float(np.mean((lo > t) & (hi > t)))


def spike_z(img: object) -> float:
    """Robust z-score of the strongest k-space outlier outside the centre.

    log|FFT| minus its 5x5 median is flat for anatomy (k-space falls smoothly);
    a spike (one corrupt sample) stands out. z = (v - median) / (1.4826 MAD)
    over k-space beyond 5% of the matrix from the centre (the centre holds the
    real, steep peak). Clean images score about 5-8 (the max of ~N^2 samples).
    """
    x = as_image(img)
    k = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(x))))
    hp = k - ndimage.median_filter(k, size=5)
    yy, xx = np.ogrid[: x.shape[0], : x.shape[1]]
    r = np.hypot((yy - x.shape[0] / 2) / x.shape[0], (xx - x.shape[1] / 2) / x.shape[1])
    return float(robust_z(hp[r > 0.05]).max())


def zipper_z(img: object, pe_axis: int) -> float:
    """Robust z-score of the strongest line along phase encode (zipper).

    RF interference at one frequency lands at one readout position in every
    PE line: a line parallel to the PE axis. High-pass across readout
    (minus a 5-pixel running median), take each line's median |high-pass|
    along PE (partial anatomy edges do not reach the median), then the robust
    z of the largest line.
    """
    x = as_image(img)
    ro = 1 - _axis(pe_axis)
    hp = np.abs(x - ndimage.median_filter(x, size=5, axes=(ro,)))
    energy = np.median(hp, axis=_axis(pe_axis))
    return float(robust_z(energy).max())


def mr_metrics(img: object, pe_axis: int) -> dict[str, float]:
    """All MR metrics of one magnitude image."""
    x = as_image(img)
    ax = _axis(pe_axis)
    return {
        "ghost_ratio": ghost_ratio(x, ax),
        "efc": efc(x),
        "gradient_entropy": gradient_entropy(x),
        "edge_strength": edge_strength(x),
        "fber": fber(x),
        "snr": snr_dietrich(x),
        "wrap_fraction": wrap_fraction(x, ax),
        "spike_z": spike_z(x),
        "zipper_z": zipper_z(x, ax),
    }
