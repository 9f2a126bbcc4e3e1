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


GHOST_FREE = 0.25  # share of the N/2-shifted object that must land in background
MIN_AIR = 3000  # background pixels needed for the background metrics
MIN_SIDE = 96  # pixels: a smaller image is a thumbnail or a crop (emri_small: 64^2)


def air_is_noise(x: F32, air: Mask) -> bool:
    """True when the image has a measurable background (air) region.

    Needs an image of at least MIN_SIDE pixels a side, at least MIN_AIR air pixels
    (5 px or more from anatomy) and a background
    that is not constant: one the scanner zeroed has SD 0 and no noise to measure.
    A tight 64^2 crop inside the head (MR_small, emri_small) leaves 1-3 thousand
    "air" pixels that are really dark tissue (median 20-25% of the foreground), and the
    background metrics (snr, fber, ghost_ratio, efc) would read tissue texture as
    noise: they are NaN there, "not measurable on this image".
    """
    if int(air.sum()) < MIN_AIR or min(x.shape) < MIN_SIDE:
        return False
    return float(x[air].std()) > 1e-6 * max(float(np.abs(x).max()), 1e-30)


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
    rolled = np.roll(fg, x.shape[ax] // 2, axis=ax)
    ghost = rolled & far
    rest = air & ~ghost
    if ghost.sum() < GHOST_FREE * rolled.sum():
        # the object spans most of the PE field (examples_overlay: a 300-line crop of a
        # 484-line acquisition, 88% filled): its N/2 copy lands on itself and the few
        # "ghost" pixels left are gaps between body parts. Not measurable.
        return float("nan")
    if ghost.sum() < 10 or rest.sum() < 10 or not fg.any() or not air_is_noise(x, air):
        return float("nan")  # no ghost region, or no noise-like background to compare with
    return float((x[ghost].mean() - x[rest].mean()) / np.median(x[fg]))


def pe_artifact_ratio(img: object, pe_axis: int) -> float:
    """Background signal along phase encode beyond that along readout, over the signal.

    Motion, N/2 ghosting and other phase errors displace copies of the object along
    phase encode only, so they land in the background band that shares the object's
    readout positions (band A: readout within the object's extent, phase encode outside
    it), never in the band beside the object along readout (band B: phase encode within
    its extent, readout outside it). Both bands hold the same Rayleigh noise, which
    cancels: ratio = (mean(A) - mean(B)) / median(foreground); the corners (C, outside
    the object's extent both ways) are also ghost-free and serve if darker than B. It does not depend on
    the noise level, on how much of the field the object fills (unlike EFC) or on the
    matrix. The MR motion metric. NaN when either band has fewer than 200 background
    pixels (the object fills the field in one direction) or there is no background.
    """
    x = as_image(img)
    ax = _axis(pe_axis)
    fg, air = masks(x)
    if not fg.any() or not air_is_noise(x, air):
        return float("nan")
    grown = ndimage.binary_fill_holes(ndimage.binary_dilation(fg, iterations=5))
    in_ro = _span(grown.any(axis=ax))  # readout positions the object spans
    in_pe = _span(grown.any(axis=1 - ax))  # phase-encode positions it spans
    pe_idx = np.expand_dims(in_pe, 1 - ax)
    ro_idx = np.expand_dims(in_ro, ax)
    far = ~grown  # ghosts can be bright: do not require them to look like air
    band_a = far & ro_idx & ~pe_idx
    refs = [far & pe_idx & ~ro_idx, far & ~pe_idx & ~ro_idx]  # beside it; the corners
    ref = [float(x[b].mean()) for b in refs if b.sum() >= 200]
    if band_a.sum() < 200 or not ref:
        return float("nan")
    # the darker ghost-free reference: object signal blurred past the mask lifts the other
    return float((x[band_a].mean() - min(ref)) / np.median(x[fg]))


def _span(flags: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """True from the first to the last True (the object's extent along one axis)."""
    idx = np.flatnonzero(flags)
    out = np.zeros_like(flags)
    if idx.size:
        out[idx[0] : idx[-1] + 1] = True
    return out


def efc(img: object) -> float:
    """Entropy focus criterion, MRIQC definition (Atkinson et al., IEEE TMI 1997).

    EFC = sum(x/xmax * ln(x/xmax)) / (N * (1/sqrt(N)) * ln(1/sqrt(N))),
    xmax = sqrt(sum x^2), N = number of pixels; 1 = uniform (all blurred/ghosted),
    lower = more energy concentrated in sharp structure.
    """
    img32 = as_image(img)
    _, air = masks(img32)
    if not air_is_noise(img32, air):
        # EFC is the share of energy that leaked into the background: it reads tissue
        # texture instead of blur on a crop with no background (MR_small: 0.78)
        return float("nan")
    x = np.abs(img32).astype(np.float64).ravel()
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
    if not fg.any() or not air_is_noise(x, air):
        return float("nan")  # no noise-like background: the ratio would divide by ~0
    bg = float(np.median(x[air] ** 2))
    return float(np.median(x[fg] ** 2) / bg) if bg > 0 else float("nan")


def snr_dietrich(img: object) -> float:
    """SNR from air (Dietrich et al., JMRI 2007; MRIQC ``snrd``).

    Magnitude air is Rayleigh: its SD is sigma * sqrt((4 - pi) / 2) = 0.655 sigma.
    SNR = mean(fg) / sigma = sqrt((4 - pi)/2) * mean(fg) / SD(air).
    """
    x = as_image(img)
    fg, air = masks(x)
    if not fg.any() or not air_is_noise(x, air):
        return float("nan")  # no air, too little, or a zeroed background: not measurable
    sd = float(x[air].std())
    return float(DIETRICH * x[fg].mean() / sd)


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
    """Robust z-score of the strongest k-space outlier outside the centre (not graded).

    The same residual as :func:`spike_peak`, divided by 1.4826 MAD over k-space; a strong
    spike's herringbone widens that spread itself, so the log height is what QC grades.
    """
    return _spike(as_image(img))[0]


def spike_peak(img: object) -> float:
    """Height (natural-log units) of the strongest k-space point above its neighbourhood.

    A spike is one corrupt k-space sample: in the complex image a plane wave (herringbone)
    of amplitude A. After the magnitude step it survives as ``|I| + Re(A ...)`` only where
    the object dominates the noise; in the air it is lost in the Rayleigh floor. So the
    magnitude image's k-space carries the spike as A/2 convolved with the spectrum of the
    object's support, whose sharp outline (scalp, skull) spreads it into sidelobes and
    itself fills k-space with edge energy as high as a moderate spike.

    The detector therefore first weights the image with a smooth taper inside the object
    (raised cosine over 8% of the matrix from the support's edge, image edges included):
    the outline's edge energy and the spike's sidelobes go, the spike stays a compact
    peak. The peak is compared with the mean log |k| of a ring around it (from 9 to 21
    bins at 256 px and up, narrower below: a bin's neighbourhood in k-space has the same
    size in bins whatever the matrix), outside the centre and the lines through it (axis-
    aligned edges put genuine energy there). Clean images read about 1.2-1.7, a spike of
    5% of the DC sample about 3 on the real head and the phantom alike.
    """
    return _spike(as_image(img))[1]


def _spike_taper(x: F32) -> tuple[F32, float]:
    """``x`` weighted by a raised cosine rising over 8% of the matrix inside the object, and
    the k-space level of the weighted rounding noise (1/sqrt(12) per pixel): the floor."""
    support = ndimage.binary_opening(x > 0.1 * float(np.percentile(x, 99)), iterations=2)
    support = np.pad(ndimage.binary_fill_holes(support), 1)  # the image edge bounds it too
    depth = ndimage.distance_transform_edt(support)[1:-1, 1:-1]
    ramp = max(4.0, 0.08 * max(x.shape))
    w = 0.5 - 0.5 * np.cos(np.pi * np.clip((depth - 2.0) / ramp, 0.0, 1.0))
    out: F32 = (x * w).astype(np.float32)
    return out, float(np.sqrt(np.sum(w * w) / 12.0))


def _spike(x: F32) -> tuple[float, float]:
    if float(x.std()) <= 1e-6 * max(float(np.abs(x).max()), 1e-30):
        return float("nan"), float("nan")  # constant (blank, saturated): no k-space to read
    tapered, floor = _spike_taper(x)
    mag = np.abs(np.fft.fftshift(np.fft.fft2(tapered.astype(np.float64))))
    # below the rounding noise of stored integers k-space holds only the taper's own
    # smooth spectrum and float residue, which a log would blow up into peaks
    k = np.log(mag + floor + 1e-12 * float(mag.max()))
    n = min(x.shape)
    outer = int(np.clip(n // 12, 7, 21)) | 1
    inner = int(np.clip(n // 28, 3, 9)) | 1
    ring = ndimage.uniform_filter(k, outer, mode="wrap") * outer**2
    ring -= ndimage.uniform_filter(k, inner, mode="wrap") * inner**2
    hp = k - ring / (outer**2 - inner**2)
    h, w = x.shape
    yy, xx = np.ogrid[:h, :w]
    r = np.hypot((yy - h / 2) / h, (xx - w / 2) / w)
    # Leave out the centre (the real, steep peak), the outermost 3 lines and the lines
    # through the centre: edges aligned with the axes put a ridge of genuine energy along
    # kx = 0 and ky = 0.
    keep = (r > 0.05) & (np.abs(yy - h // 2) > 1) & (np.abs(xx - w // 2) > 1)
    keep &= (yy >= 3) & (yy < h - 3) & (xx >= 3) & (xx < w - 3)
    out = hp[keep]
    if out.size < 64:
        return float("nan"), float("nan")
    mad = float(np.median(np.abs(out - np.median(out))))
    z = float(robust_z(out).max()) if mad > 1e-9 else float("nan")
    return z, float(out.max())


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
    med = float(np.median(energy))
    mad = 1.4826 * float(np.median(np.abs(energy - med)))
    # A zeroed background (scanner masking, MR-SIEMENS-DICOM-WithOverlays) makes most
    # lines' median exactly 0: the MAD is 0 and the old z read 1e12. No noise floor, no
    # score: NaN. Else the MAD is floored at 1% of the median line energy.
    if med <= 0.0 or mad <= 1e-6 * float(np.abs(x).max()):
        return float("nan")
    return float((energy.max() - med) / max(mad, 0.01 * med))


def mr_metrics(img: object, pe_axis: int) -> dict[str, float]:
    """All MR metrics of one magnitude image."""
    x = as_image(img)
    ax = _axis(pe_axis)
    sz, sp = _spike(x)
    return {
        "ghost_ratio": ghost_ratio(x, ax),
        "efc": efc(x),
        "pe_artifact_ratio": pe_artifact_ratio(x, ax),
        "gradient_entropy": gradient_entropy(x),
        "edge_strength": edge_strength(x),
        "fber": fber(x),
        "snr": snr_dietrich(x),
        "wrap_fraction": wrap_fraction(x, ax),
        "spike_z": sz,
        "spike_peak": sp,
        "zipper_z": zipper_z(x, ax),
    }
