"""Corpus measurement for benchmarks/eval_qc.py: fit and held-out series, real images.

A :class:`Row` is one series: its modality, split, source, artifact, severity and the
metrics of each of its images (as ``kernels.qc`` computes them).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np
import pydicom
from skimage.transform import resize

from agent.qc.image_qc import measure_file
from kernels.qc import ct_metrics, dx_metrics, mr_metrics
from tests.support import corpus as C
from tests.support import corpus_ct as K

# modality -> class -> (measured metric, direction); the protocol entry names are in ENTRY
PRIMARY: dict[str, dict[str, tuple[str, str]]] = {
    "CT": {
        "ring": ("ring_z", "high"),
        "motion": ("motion_streak_hu", "high"),
        "metal": ("metal_streak_hu", "high"),
        "low_dose": ("noise_lf_hu", "high"),
        "truncation": ("truncation_fraction", "high"),
        "hu_offset": ("air_hu_error", "high"),
    },
    "MR": {
        "ghosting": ("ghost_ratio", "high"),
        "motion": ("pe_artifact_ratio", "high"),
        "spike": ("spike_peak", "high"),
        "zipper": ("zipper_z", "high"),
        "noise": ("snr", "low"),
        "wrap": ("wrap_fraction", "high"),
    },
    "DX": {
        "overexposure": ("deviation_index", "high"),
        "underexposure": ("deviation_index", "low"),
        "saturation": ("saturation_fraction", "high"),
        "collimation": ("collimation_fraction", "high"),
        "motion": ("sharpness", "low"),
    },
}
# (modality, class) -> protocol entry name (the reason code), where it differs from the metric
ENTRY = {
    ("CT", "ring"): "ring_hu",
    ("CT", "low_dose"): "noise_hu",
    ("MR", "spike"): "spike_z",
    ("DX", "overexposure"): "deviation_index_overexposure",
    ("DX", "underexposure"): "deviation_index_underexposure",
}

# Real files that show a real problem (tests/qc/test_qc_real_images.py asserts the flag)
# or are no measurable image; they stay out of the fit set's clean series.
REAL_NOT_CLEAN = {
    "RG3_UNCI.dcm", "RG3_UNCR.dcm", "RG3_J2KI.dcm", "RG3_J2KR.dcm",  # collimated extremity
    "693_UNCI.dcm", "693_J2KI.dcm",  # lossy JPEG 2000 copy: posterised brain, artifacts in air
    "cat.dcm",  # DX over-exposed by its own EI tags (DI +2.4)
    "ctbrain1.dcm", "ctbrain2.dcm",  # RGB drawings, not CT data
    "examples_overlay.dcm",  # 300-row crop of the Siemens MR: PE field cut after recon
    "eCT_Supplemental.dcm",  # a binary mask stored as enhanced CT
}  # fmt: skip


@dataclass(frozen=True)
class Row:
    modality: str
    split: str
    source: str
    artifact: str
    severity: int
    frames: tuple[dict[str, float], ...]
    body_part: str = ""


def _ct_rows(split: str, seeds: list[int]) -> list[Row]:
    rows = []
    draw = K.fit_params if split == "fit" else K.heldout_params
    sevs = (1, 2, 3) if split == "fit" else (2, 3)
    for seed in seeds:
        p = draw(seed)
        src = f"{p.source}/{p.matrix}/{p.filter}/d{p.dose}/{p.bits}b"
        clean = [ct_metrics(s.hu, s.spacing) for s in K.series(p, "clean", 0, seed, 2)]
        rows.append(Row("CT", split, src, "clean", 0, tuple(clean)))
        for art in K.ARTIFACTS:
            for sev in sevs:
                s = K.ct_slice(p, art, sev, seed)
                rows.append(Row("CT", split, src, art, sev, (ct_metrics(s.hu, s.spacing),)))
    return rows


def _rescale(img: np.ndarray, f: float) -> np.ndarray:
    shape = (round(img.shape[0] * f), round(img.shape[1] * f))
    return np.asarray(resize(img, shape, order=1, anti_aliasing=True), dtype=np.float32)


def _mr_rows(split: str, seeds: list[int]) -> list[Row]:
    rows = []
    f = 1.0 if split == "fit" else 0.75
    for seed in seeds:
        for src in (0, 1):
            for art in ("clean", *C.MR_ARTIFACTS):
                for sev in (0,) if art == "clean" else (1, 2, 3):
                    # the held-out matrix is made before the artifact, in its own k-space
                    s = C.mr_sample(src, art, sev, seed, scale=f)
                    m = mr_metrics(s.image, s.meta["pe_axis"])
                    rows.append(Row("MR", split, s.meta["source"], art, sev, (m,)))
    return rows


def _dx_rows(split: str, seeds: list[int]) -> list[Row]:
    rows = []
    for seed in seeds:
        for art in ("clean", *C.DX_ARTIFACTS):
            for sev in (0,) if art == "clean" else (1, 2, 3):
                s = C.dx_sample(art, sev, seed)
                img = s.image if split == "fit" else _rescale(s.image, 2.0 / 3.0)
                m = dx_metrics(img, s.meta["tags"])
                rows.append(Row("DX", split, "RG1_UNCI", art, sev, (m,), "CHEST"))
    return rows


def measure_all(split: str, seeds: list[int]) -> list[Row]:
    return _ct_rows(split, seeds) + _mr_rows(split, seeds) + _dx_rows(split, seeds)


def real_files() -> list[str]:
    """Every CT, MR, CR and DX file of pydicom's test files, pydicom-data and deid-data."""
    import data_store  # type: ignore[import-untyped]  # pydicom-data's package
    import deid_data  # type: ignore[import-untyped]
    from pydicom.data.data_manager import get_testdata_files

    paths = set(get_testdata_files("*"))
    for pkg in (data_store, deid_data):
        base = os.path.join(os.path.dirname(pkg.__file__), "data")
        paths |= {p for p in glob.glob(base + "/**/*", recursive=True) if os.path.isfile(p)}
    out = []
    for p in sorted(paths):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:
            continue
        if str(ds.get("Modality", "")) in ("CT", "MR", "CR", "DX"):
            out.append(p)
    return out


def real_clean_rows() -> list[Row]:
    rows = []
    for p in real_files():
        if os.path.basename(p) in REAL_NOT_CLEAN:
            continue
        m = measure_file(p)
        if m.error or not m.frames:
            continue
        mod = "DX" if m.modality in ("CR", "DX") else m.modality
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        bp = str(ds.get("BodyPartExamined", ""))
        rows.append(Row(mod, "fit", os.path.basename(p), "clean", 0, m.frames, bp))
    return rows
