"""Shared fixtures for the MRI kernel tests: analytic phantom data built once per session."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tests.mri_phantoms import cartesian_multicoil, phantom_image, pixel_grid


@pytest.fixture(scope="session")
def kspace_256() -> npt.NDArray[np.complex64]:
    """Fully sampled 8-coil 256x256 analytic k-space."""
    return cartesian_multicoil(256, 8).astype(np.complex64)


@pytest.fixture(scope="session")
def support_256() -> npt.NDArray[np.bool_]:
    """Object support of the 256x256 phantom."""
    xx, yy = pixel_grid(256)
    return phantom_image(xx, yy) > 0
