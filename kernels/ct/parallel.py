"""Parallel-beam filtered backprojection with scikit-image's iradon conventions."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from kernels.ct import _filters, _validate
from kernels.ct._cpu_parallel import backproject_parallel, guarded_lines
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
    q, lines, det_center = _filtered_views(sino, name, circle)
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


def _filtered_views(sino: F32, name: str, circle: bool) -> tuple[F32, F32, int]:
    """(q, lines, centre): ramp-filtered views as (views, detectors + 1) with a zero guard
    column, their :func:`line_segments`, and the detector centre index.

    Padding to the diagonal (circle) and the FFT length copy iradon, so the same samples
    of the filtered projection are produced. The views go transposed straight into the
    zeroed FFT buffer at their padded offset (what np.pad and rfft's zero fill did in two
    more copies), and the guard column and lines come from one parallel kernel.
    """
    detectors, views = sino.shape
    n = int(np.ceil(np.sqrt(2) * detectors)) if circle else detectors
    before = n // 2 - detectors // 2  # iradon's _sinogram_circle_to_square offset
    size = _filters.padded_size(n)
    buffer = np.zeros((views, size), dtype=np.float32)
    buffer[:, before : before + detectors] = sino.T
    filtered = _filters.filter_padded(buffer, _response(size, name))
    q, lines = guarded_lines(filtered[:, :n], n // 2)
    return q, lines, n // 2


@functools.cache
def _response(size: int, name: str) -> F32:
    """The filter's half spectrum for an FFT of ``size`` (read-only, shared by calls)."""
    response = _filters.frequency_response(2.0 * _filters.ramp_kernel(size), name)
    response.flags.writeable = False
    return response
