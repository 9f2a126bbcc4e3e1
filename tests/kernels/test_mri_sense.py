"""SENSE (direct unfolding and CG) with coil maps from the ACS (RSS-normalised
low-resolution images).

NRMSE is ``|| |x| - rss(full) || / ||rss(full)||`` over the object support. Measured with
24 ACS lines, 30 iterations, lam=1e-3: R=2 0.0085, R=3 0.015, R=4 0.046 (0.021 at R=2
over the whole image: maps are zeroed outside the object, where RSS still rings).
Direct unfolding uses only the lattice lines (not the extra ACS lines): measured R=2
0.0124, R=4 0.051 (phase 0) / 0.037 (phase 1).
"""

from __future__ import annotations

import numpy as np
import pytest

from kernels.mri.cartesian import ifftc, rss
from kernels.mri.sense import acs_maps, cg_sense, conjugate_gradient, sense_unfold
from tests.kernels.test_mri_grappa import undersample
from tests.support.mri_phantoms import nrmse, phantom_kspace_256, phantom_support_256


@pytest.mark.parametrize(("r", "limit"), [(2, 0.015), (3, 0.025)])
def test_cg_sense_nrmse(r: int, limit: float) -> None:
    kspace_256 = phantom_kspace_256()
    support_256 = phantom_support_256()
    us = undersample(kspace_256, r)
    x = cg_sense(us, acs_maps(us), iters=30, lam=1e-3)
    err = nrmse(np.abs(x), rss(ifftc(kspace_256)), support_256)
    print(f"CG-SENSE R={r} NRMSE {err:.4f}")
    assert err <= limit


def test_acs_maps_are_unit_norm_inside_object() -> None:
    kspace_256 = phantom_kspace_256()
    support_256 = phantom_support_256()
    maps = acs_maps(undersample(kspace_256, 2))
    norm = np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))
    inside = norm > 0  # maps are zeroed where the low-resolution RSS is below 5 % of max
    assert np.allclose(norm[inside], 1.0, atol=1e-4)
    assert inside[support_256].mean() > 0.99


def test_conjugate_gradient_solves_spd_system() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 6)) + 1j * rng.standard_normal((6, 6))
    a = (a @ a.conj().T + 6 * np.eye(6)).astype(np.complex64)
    b = (rng.standard_normal(6) + 0j).astype(np.complex64)
    x, n = conjugate_gradient(lambda v: a @ v, b, 50, 1e-6)
    assert np.allclose(a @ x, b, atol=1e-4)
    assert n <= 10


def test_sense_input_validation() -> None:
    kspace_256 = phantom_kspace_256()
    us = undersample(kspace_256, 2)
    with pytest.raises(ValueError, match="must match"):
        cg_sense(us, np.ones((4, 256, 256)))
    with pytest.raises(ValueError, match="ACS"):
        acs_maps(us[:, :, :] * (np.arange(256) % 2 == 0)[None, :, None])
    with pytest.raises(ValueError, match="lam"):
        cg_sense(us, acs_maps(us), lam=-1)


@pytest.mark.parametrize(("r", "phase", "limit"), [(2, 0, 0.02), (2, 1, 0.02), (4, 1, 0.06)])
def test_direct_sense_unfold_nrmse(r: int, phase: int, limit: float) -> None:
    kspace_256 = phantom_kspace_256()
    us = undersample(kspace_256, r, phase=phase)
    x = sense_unfold(us, acs_maps(us), r)
    err = nrmse(np.abs(x), rss(ifftc(kspace_256)), phantom_support_256())
    print(f"direct SENSE R={r} phase={phase} NRMSE {err:.4f}")
    assert err <= limit


def test_direct_sense_validation() -> None:
    us = undersample(phantom_kspace_256(), 3)
    with pytest.raises(ValueError, match="multiple of R=3"):
        sense_unfold(us, acs_maps(us), 3)
    us2 = undersample(phantom_kspace_256(), 2)
    with pytest.raises(ValueError, match="lattice"):
        sense_unfold(undersample(phantom_kspace_256(), 4), acs_maps(us2), 2)
