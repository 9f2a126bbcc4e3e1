"""Raw data for ``inspect``: MRD/ISMRMRD files and CT projection data are reconstructed to
DICOM images first, exactly as the daemon would, and those images are then inspected."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from agent.operator.paths import walk
from agent.recon.ct_projection import is_projection_data, reconstruct_files
from agent.recon.mrd_file import is_mrd_file, reconstruct_file
from agent.recon.mrd_protocol import MrdProtocolError

log = logging.getLogger(__name__)


def expand_raw(
    paths: Sequence[Path], workdir: Path, notes: dict[str, list[tuple[str, str]]] | None = None
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files to inspect (reconstructions written under ``workdir``) and failures;
    ``notes`` gets the warnings reconstruction made, per series UID, for the verdicts."""
    images: list[Path] = []
    projections: list[Path] = []
    failed: list[tuple[Path, str]] = []
    made: list[Dataset] = []
    for path in walk(paths):
        if is_mrd_file(path):
            try:
                made += reconstruct_file(path, notes=notes)
            except (MrdProtocolError, ValueError, OSError) as exc:
                failed.append((path, f"raw data could not be reconstructed: {exc}"))
        elif _is_projection(path):
            projections.append(path)
        else:
            images.append(path)
    if projections:
        try:
            made += reconstruct_files(projections)
        except ValueError as exc:
            failed += [
                (p, f"projection data could not be reconstructed: {exc}") for p in projections
            ]
    for n, ds in enumerate(made):
        out = workdir / f"recon{n:05d}.dcm"
        ds.save_as(out, enforce_file_format=True)
        images.append(out)
    return images, failed


def _is_projection(path: Path) -> bool:
    try:
        return is_projection_data(dcmread(path, stop_before_pixels=True))
    except (InvalidDicomError, OSError, ValueError, AttributeError, TypeError):
        return False
