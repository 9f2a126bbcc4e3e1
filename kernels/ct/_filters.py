"""Ramp filters and FFT filtering shared by the parallel, fan and cone reconstructions.

The ramp is built in the spatial domain and then transformed, as in
``skimage.transform.iradon`` (Kak & Slaney, *Principles of Computerized Tomographic
Imaging*, 1988, ch. 3 eq. 61, as cited by iradon): sampling the band-limited ramp's impulse response

    h(0) = 1/4,   h(n) = -1/(pi n)^2 for odd n,   h(n) = 0 for even n != 0   (unit spacing)

and taking its DFT avoids the DC bias of a ramp sampled directly in frequency.
The apodisation windows are exactly those of iradon so results compare one to one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import scipy.fft

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


def padded_size(n: int) -> int:
    """FFT length used by iradon: next power of two >= 2n, at least 64 (no wrap-around)."""
    return max(64, int(2 ** np.ceil(np.log2(2 * n))))


def _wrapped_lags(size: int) -> npt.NDArray[np.int64]:
    """|lag| of each position of a circularly wrapped kernel of even length ``size``."""
    k = np.arange(size)
    return np.minimum(k, size - k)


def ramp_kernel(size: int) -> F64:
    """Kak & Slaney's discrete ramp impulse response h(n), unit spacing, wrapped to ``size``."""
    lag = _wrapped_lags(size)
    kernel = np.zeros(size)
    kernel[0] = 0.25
    odd = lag % 2 == 1
    kernel[odd] = -1.0 / (np.pi * lag[odd]) ** 2
    return kernel


def _window(size: int, name: str) -> F64:
    """Apodisation window over the unshifted DFT frequencies, defined as in iradon."""
    windows: dict[str, Callable[[], F64]] = {
        "ramp": lambda: np.ones(size),
        "shepp-logan": lambda: _shepp_logan(size),
        "cosine": lambda: scipy.fft.fftshift(np.sin(np.linspace(0, np.pi, size, endpoint=False))),
        "hamming": lambda: scipy.fft.fftshift(np.hamming(size)),
        "hann": lambda: scipy.fft.fftshift(np.hanning(size)),
    }
    return windows[name]()


def _shepp_logan(size: int) -> F64:
    """sinc(f) window, sin(pi f)/(pi f) with f in cycles/sample (iradon's definition)."""
    omega = np.pi * scipy.fft.fftfreq(size)[1:]
    return np.concatenate(([1.0], np.sin(omega) / omega))


def frequency_response(kernel: F64, name: str) -> F32:
    """Half-spectrum (for ``rfft``) of a wrapped spatial kernel times the window ``name``.

    iradon keeps ``real(ifft(fft(p) * H))``; for real ``p`` that equals filtering with
    the Hermitian part ``(H[k] + H[-k]) / 2``, which is what an ``irfft`` can apply.
    """
    size = kernel.shape[0]
    full = np.real(scipy.fft.fft(kernel)) * _window(size, name)
    symmetric = 0.5 * (full + np.roll(full[::-1], 1))
    return np.ascontiguousarray(symmetric[: size // 2 + 1], dtype=np.float32)


def filter_rows(rows: F32, response: F32) -> F32:
    """Convolve each row (last axis) with the filter, zero-padded to the response's length."""
    n = rows.shape[-1]
    size = 2 * (response.shape[0] - 1)
    spectrum = scipy.fft.rfft(rows, n=size, axis=-1, workers=-1)
    spectrum *= response
    out = scipy.fft.irfft(spectrum, n=size, axis=-1, workers=-1)[..., :n]
    return np.ascontiguousarray(out, dtype=np.float32)


def filter_padded(rows: F32, response: F32) -> F32:
    """As :func:`filter_rows` for rows already zero-padded to the FFT length; returns the
    whole padded length (callers crop), so no copy is made after the inverse FFT."""
    spectrum = scipy.fft.rfft(rows, axis=-1, workers=-1)
    spectrum *= response
    out: F32 = scipy.fft.irfft(spectrum, n=rows.shape[-1], axis=-1, workers=-1, overwrite_x=True)
    return out
