"""The package surface: exports resolve and warmup() compiles every CPU kernel."""

from __future__ import annotations

import kernels.mri as mri


def test_exports_resolve_and_modules_are_not_shadowed() -> None:
    for name in mri.__all__:
        assert callable(getattr(mri, name)), name
    assert hasattr(mri.grappa, "grappa")  # the submodule, not the function
    assert hasattr(mri.nufft, "nufft")


def test_warmup_runs() -> None:
    mri.warmup()
