"""Generated CT series for the QC pipeline tests: real head CT pixels plus corpus artifacts.

Each slice is a ``tests.support.corpus`` sample (an FBP reconstruction from simulated
projections of the real head 693_UNCR, optionally with an artifact) written as a Part 10 CT
file of one series, with HU stored through RescaleIntercept -1024, so reading it back
exercises the modality LUT.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from tests.support import corpus
from tests.support.dicom_factory import ct_slice, series_header


@functools.cache
def _hu(artifact: str, severity: int, seed: int) -> tuple[NDArray[np.float32], float]:
    s = corpus.ct_sample(0, artifact, severity, seed)
    return s.image, float(s.meta["spacing"][0])


def write_series(
    folder: Path, artifact: str = "clean", severity: int = 0, n: int = 4,
    *, body_part: str = "HEAD", header: Dataset | None = None,
) -> list[Path]:  # fmt: skip
    """``n`` slices (seeds 0..n-1) with ``artifact`` at ``severity``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    hdr = header or series_header(f"HEAD {artifact.upper()}", body_part)
    paths = []
    for i in range(n):
        hu, spacing = _hu(artifact, severity, i)
        ds = ct_slice(hdr, i)
        stored = np.clip(np.round(hu + 1024.0), -32768, 32767).astype(np.int16)
        ds.Rows, ds.Columns = stored.shape
        ds.PixelSpacing = [spacing, spacing]
        ds.PixelData = stored.tobytes()
        path = folder / f"{artifact}{severity}_{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
