"""Raw MR data to images: each slice is reconstructed as soon as its last readout arrives.

:func:`reconstruct` is the pure, expensive part (a worker thread) behind
:class:`~agent.recon.mrd_session.MrdSession`: prewhitening (noise scans), readout
oversampling removal (encoded FOV twice the recon FOV), GRAPPA (parallelImaging
acceleration > 1), homodyne partial Fourier (asymmetric ky encoding limits), radial gridding
with density compensation, and root-sum-of-squares coil combination, all from
:mod:`kernels.mri`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.recon.mrd_session import (
    C64,
    F32,
    Encoding,
    Geometry,
    SliceJob,
    SliceKey,
)
from kernels.device import Device
from kernels.mri import (
    homodyne,
    ifftc,
    nufft_adjoint,
    prewhiten,
    ramp_density,
    remove_readout_oversampling,
    rss,
)
from kernels.mri.grappa import grappa

__all__ = ["ReconImage", "reconstruct"]


@dataclass(frozen=True)
class ReconImage:
    """A magnitude image of one slice and where it lies."""

    key: SliceKey
    pixels: F32  # (rows = phase, columns = read)
    geometry: Geometry
    fov: tuple[float, float, float]  # of ``pixels``, mm (z: slice thickness)
    method: str
    last_readout_at: float


def reconstruct(job: SliceJob, device: Device = "cpu") -> ReconImage:
    """Reconstruct one slice (pure; run it in a worker thread). ValueError on bad data."""
    enc = job.encoding
    k = job.kspace if job.whitening is None else prewhiten(job.kspace, job.whitening)
    if enc.trajectory == "cartesian":
        pixels, method = _cartesian(k, enc, device)
        fov = enc.recon_fov if pixels.shape == enc.recon_matrix[1::-1] else _fov_of(pixels, enc)
    else:
        pixels, method = _radial(k, job.spokes, enc, device), "radial gridding"
        fov = enc.recon_fov
    if job.whitening is not None:
        method = "prewhitened, " + method
    return ReconImage(job.key, pixels, job.geometry, fov, method, job.last_readout_at)


def _fov_of(pixels: F32, enc: Encoding) -> tuple[float, float, float]:
    ny, nx = pixels.shape
    fx = enc.fov[0] * nx / enc.matrix[0] * (2 if enc.readout_oversampled else 1)
    return (fx, enc.fov[1] * ny / enc.matrix[1], enc.recon_fov[2])


def _cartesian(k: C64, enc: Encoding, device: Device) -> tuple[F32, str]:
    steps = []
    if enc.readout_oversampled:
        k = remove_readout_oversampling(k)
    lines = np.nonzero(np.any(k != 0, axis=(0, 2)))[0]
    if lines.size == 0:
        raise ValueError("slice has no data")
    lo, hi = int(lines[0]), int(lines[-1]) + 1
    if enc.acceleration > 1 and lines.size < hi - lo:
        k = k.copy()
        k[:, lo:hi] = grappa(k[:, lo:hi], enc.acceleration, device=device)
        steps.append(f"GRAPPA R={enc.acceleration}")
    if enc.partial_fourier:
        images = homodyne(k)
        steps.append("homodyne partial Fourier")
    else:
        images = ifftc(k)
    pixels = _crop(rss(images), enc.recon_matrix[1], enc.recon_matrix[0])
    return pixels, ", ".join(["Cartesian", *steps, "RSS"])


def _crop(img: F32, ny: int, nx: int) -> F32:
    y0 = max((img.shape[0] - ny) // 2, 0)
    x0 = max((img.shape[1] - nx) // 2, 0)
    return np.ascontiguousarray(img[y0 : y0 + ny, x0 : x0 + nx])


def _radial(k: C64, spokes: npt.NDArray[np.float64] | None, enc: Encoding, device: Device) -> F32:
    assert spokes is not None
    nc, nread, ns = k.shape
    n = enc.recon_matrix[0]
    coords = spokes.reshape(-1, 2)
    w = ramp_density(coords, nread, n / ns).astype(np.float32)
    y = k.reshape(nc, -1) * w[None, :]
    images = nufft_adjoint(y, coords, (enc.recon_matrix[1], n), device=device)
    # density weights make the adjoint a Riemann sum (object units); divide by sqrt(N) to
    # match the orthonormal FFT of the Cartesian path, so both give the same intensities
    return rss(images) / np.float32(math.sqrt(n * enc.recon_matrix[1]))
