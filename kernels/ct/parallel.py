"""Parallel-beam filtered backprojection with scikit-image's iradon conventions."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from kernels.ct import _filters, _validate
from kernels.ct._cpu_parallel import backproject_parallel, line_segments
from kernels.device import Device, resolve_device

F32 = npt.NDArray[np.float32]

INTERPOLATIONS = ("linear", "nearest")


def fbp_parallel(
    sinogram: Any,
    theta_deg: Any,
    filter: str = "ramp",
    output_size: int | None = None,
    interpolation: str = "linear",
    circle: bool = True,
    device: Device = "auto",
) -> F32:
    """Filtered backprojection of a parallel-beam sinogram; a float32 drop-in for iradon.

    Follows ``skimage.transform.iradon`` (0.26) exactly: ``sinogram`` is
    (detectors, views) with the rotation axis at detector index ``detectors // 2``;
    ``theta_deg`` holds one angle per view in degrees; pixel (row, col) sits at
    x = col - N//2, y = row - N//2 and sees detector t = x cos(theta) - y sin(theta).
    With ``circle`` the sinogram is zero-padded to the image diagonal before
    filtering and pixels outside the inscribed circle are zeroed; ``output_size``
    defaults to ``detectors`` (circle) or floor(detectors / sqrt 2).

    Reconstruction (Kak & Slaney 1988, sec. 3.3, discretised):

        f(x, y) = pi / (2 K) * sum_k Q_k(x cos(theta_k) - y sin(theta_k)),
        Q_k = IFFT(FFT(p_k) * 2 H),

    with H the DFT of the spatial ramp kernel times the chosen window (see
    :mod:`kernels.ct._filters`) and K the number of views. ``interpolation`` is
    ``linear`` (np.interp, zero outside) or ``nearest`` (rounds half down, as
    scipy's interp1d); iradon's ``cubic`` is not offered.

    Raises ValueError for malformed input, RuntimeError for ``device="cuda"``
    without a GPU.
    """
    sino = _validate.data_array(sinogram, 2, "sinogram")
    theta = _validate.angles(theta_deg, sino.shape[1], "theta_deg")
    name = _validate.filter_name(filter)
    interp = _validate.choice(interpolation, INTERPOLATIONS, "interpolation")
    size = _default_size(sino.shape[0], circle, output_size)
    target = resolve_device(device)
    q, det_center = _filtered_views(sino, name, circle)
    lines = line_segments(q, det_center)
    cos_t = np.cos(theta).astype(np.float32)
    sin_t = np.sin(theta).astype(np.float32)
    scale = np.pi / (2 * theta.shape[0])
    out = np.zeros((size, size), dtype=np.float32)
    if target == "cuda":
        from kernels.ct._cuda import backproject_parallel as cuda_backproject

        return cuda_backproject(
            q, lines, cos_t, sin_t, det_center, circle, interp == "nearest", scale, size
        )
    backproject_parallel(
        q, lines, cos_t, sin_t, det_center, circle, interp == "nearest", scale, out
    )
    return out


def _default_size(detectors: int, circle: bool, output_size: Any) -> int:
    if output_size is not None:
        return _validate.positive_int(output_size, "output_size")
    return detectors if circle else max(1, int(np.floor(np.sqrt(detectors**2 / 2.0))))


def _filtered_views(sino: F32, name: str, circle: bool) -> tuple[F32, int]:
    """Ramp-filtered views as (views, detectors + 1) with a zero guard column.

    Padding to the diagonal (circle) and the FFT length copy iradon, so the same
    samples of the filtered projection are produced.
    """
    views = np.ascontiguousarray(sino.T)
    if circle:
        views = _pad_to_diagonal(views)
    n = views.shape[1]
    kernel = 2.0 * _filters.ramp_kernel(_filters.padded_size(n))
    filtered = _filters.filter_rows(views, _filters.frequency_response(kernel, name))
    guarded = np.zeros((filtered.shape[0], n + 1), dtype=np.float32)
    guarded[:, :n] = filtered
    return guarded, n // 2


def _pad_to_diagonal(views: F32) -> F32:
    """iradon's _sinogram_circle_to_square: centre index n//2 moves to diagonal//2."""
    n = views.shape[1]
    diagonal = int(np.ceil(np.sqrt(2) * n))
    before = diagonal // 2 - n // 2
    return np.pad(views, ((0, 0), (before, diagonal - n - before)))
