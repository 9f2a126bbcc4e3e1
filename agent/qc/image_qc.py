"""Per-image QC: read one spooled DICOM file, compute its metrics, remember them.

:func:`measure_file` never raises for a bad image: it returns an
:class:`ImageMeasurement` whose ``error`` says what went wrong. Pixel data is decoded by
pydicom (compressed syntaxes through the installed decoders) and prepared the way
``benchmarks/eval_qc.py`` measured its corpus, so the shipped thresholds apply:

- CT: the modality LUT (RescaleSlope/Intercept) gives HU; PixelSpacing in mm.
- MR: the magnitude image at a working size of at most 512 pixels per side (integer
  binning; the corpus measured MR2_UNCI binned from 1024^2 to 512^2). The phase-encode axis
  comes from InPlanePhaseEncodingDirection (COL -> axis 0, ROW -> axis 1); without that tag
  the axis-dependent metrics (ghost_ratio, wrap_fraction, zipper_z, pe_artifact_ratio)
  are NaN.
- DX/CR: pixel values rising with detector dose (MONOCHROME1 as stored, MONOCHROME2
  inverted), at most 1024 pixels per side (the corpus measured RG1_UNCI binned 2x2),
  with ExposureIndex, TargetExposureIndex and DeviationIndex from the tags.

Multi-frame images are measured frame by frame (at most :data:`MAX_FRAMES`, evenly spread).
Other modalities get no metrics and no error. :class:`MetricsStore` keeps measurements in
the journal's SQLite file, table ``image_metrics``, written through the journal's lock.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_rescale

from agent.journal.database import Journal
from kernels.qc import ct_metrics, dx_metrics, mr_metrics

CT_MODALITIES = frozenset({"CT"})
MR_MODALITIES = frozenset({"MR"})
DX_MODALITIES = frozenset({"DX", "CR", "DR", "RG"})
MAX_FRAMES = 32
MR_WORK_SIZE = 512
DX_WORK_SIZE = 1024
_PE_METRICS = ("ghost_ratio", "wrap_fraction", "zipper_z", "pe_artifact_ratio")
_DX_TAGS = ("ExposureIndex", "TargetExposureIndex", "DeviationIndex")

Metrics = Mapping[str, float]


@dataclass(frozen=True, slots=True)
class ImageMeasurement:
    """The metrics of one image (one dict per measured frame), or why there are none."""

    sop_instance_uid: str
    series_uid: str
    modality: str
    frames: tuple[Metrics, ...] = ()
    error: str | None = None
    measured_at: float = field(default_factory=time.time)

    @property
    def metrics(self) -> dict[str, float]:
        """The single frame's metrics; for several frames, the median of each metric."""
        if len(self.frames) == 1:
            return dict(self.frames[0])
        keys = sorted({k for f in self.frames for k in f})
        out: dict[str, float] = {}
        for k in keys:
            vals = [f.get(k, math.nan) for f in self.frames]
            finite = [v for v in vals if math.isfinite(v)]
            out[k] = float(np.median(finite)) if finite else math.nan
        return out

    def to_json(self) -> str:
        """``{"modality", "sop_instance_uid", "frames": [{metric: value|null}]}``."""
        frames = [{k: (v if math.isfinite(v) else None) for k, v in f.items()} for f in self.frames]
        doc = {"modality": self.modality, "sop_instance_uid": self.sop_instance_uid}
        return json.dumps({**doc, "frames": frames}, separators=(",", ":"))


def measure_file(path: Path | str) -> ImageMeasurement:
    """Measure every supported frame of the DICOM file at ``path``; never raises."""
    try:
        ds = dcmread(path)
    except Exception as exc:  # a bad image is a result, not a crash
        return _failed(None, exc)
    return measure_dataset(ds)


def measure_dataset(ds: Dataset) -> ImageMeasurement:
    """Measure an image already read (the daemon reads each arrival once); never raises."""
    try:
        return _measure(ds)
    except Exception as exc:
        return _failed(ds, exc)


def _failed(ds: Dataset | None, exc: Exception) -> ImageMeasurement:
    return ImageMeasurement(
        sop_instance_uid=_str(ds, "SOPInstanceUID"),
        series_uid=_str(ds, "SeriesInstanceUID"),
        modality=_str(ds, "Modality"),
        error=f"{type(exc).__name__}: {exc}"[:500],
    )


def _measure(ds: Dataset) -> ImageMeasurement:
    modality = _str(ds, "Modality").upper()
    ident = (_str(ds, "SOPInstanceUID"), _str(ds, "SeriesInstanceUID"), modality)
    if not (ident[0] and ident[1]):
        return ImageMeasurement(*ident, error="not a DICOM image: SOP or Series UID missing")
    if modality not in CT_MODALITIES | MR_MODALITIES | DX_MODALITIES:
        return ImageMeasurement(*ident)
    if "PixelData" not in ds:
        return ImageMeasurement(*ident, error="no pixel data")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return ImageMeasurement(*ident, error="not a greyscale image (SamplesPerPixel != 1)")
    n = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = ds.pixel_array
    stack = pixels.reshape((-1, *pixels.shape[-2:])) if n > 1 else pixels[None]
    picks = _pick_frames(stack.shape[0])
    if modality in CT_MODALITIES:
        frames = _ct_frames(ds, stack, picks)
    elif modality in MR_MODALITIES:
        frames = _mr_frames(ds, stack, picks)
    else:
        frames = _dx_frames(ds, stack, picks)
    return ImageMeasurement(*ident, frames=tuple(frames))


def _pick_frames(n: int) -> list[int]:
    if n <= MAX_FRAMES:
        return list(range(n))
    return sorted({round(i) for i in np.linspace(0, n - 1, MAX_FRAMES)})


def _ct_frames(ds: Dataset, stack: NDArray[Any], picks: Sequence[int]) -> list[Metrics]:
    spacing = _pixel_spacing(ds)
    if spacing is None:
        raise ValueError("PixelSpacing missing or invalid: CT metrics need it in mm")
    hu = np.asarray(apply_rescale(stack, ds), dtype=np.float32)
    return [ct_metrics(hu[i], spacing) for i in picks]


def _mr_frames(ds: Dataset, stack: NDArray[Any], picks: Sequence[int]) -> list[Metrics]:
    direction = _find(ds, "InPlanePhaseEncodingDirection")
    d = str(direction or "").strip().upper()
    axis = 0 if d == "COL" else 1 if d == "ROW" else None
    out: list[Metrics] = []
    for i in picks:
        m = mr_metrics(_bin_to(stack[i].astype(np.float32), MR_WORK_SIZE), axis or 0)
        if axis is None:
            m = {k: (math.nan if k in _PE_METRICS else v) for k, v in m.items()}
        out.append(m)
    return out


def _dx_frames(ds: Dataset, stack: NDArray[Any], picks: Sequence[int]) -> list[Metrics]:
    tags: dict[object, object] = {k: ds.get(k) for k in _DX_TAGS if ds.get(k) not in (None, "")}
    invert = _str(ds, "PhotometricInterpretation").upper() == "MONOCHROME2"
    out: list[Metrics] = []
    for i in picks:
        img = stack[i].astype(np.float32)
        if invert:
            img = float(img.max()) - img
        out.append(dx_metrics(_bin_to(img, DX_WORK_SIZE), tags))
    return out


def _bin_to(img: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """Mean-bin by the smallest integer factor that brings both sides to ``size`` or less."""
    f = max(1, math.ceil(max(img.shape) / size))
    if f == 1:
        return img
    h, w = img.shape[0] // f * f, img.shape[1] // f * f
    out: NDArray[np.float32] = img[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
    return out


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    value = _find(ds, "PixelSpacing")
    try:
        row, col = (float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    ok = all(math.isfinite(v) and v > 0 for v in (row, col))
    return (row, col) if ok else None


def _find(ds: Dataset, keyword: str) -> object:
    """A top-level attribute, else from the shared functional groups (enhanced objects)."""
    if keyword in ds:
        return ds.get(keyword)
    for group in ds.get("SharedFunctionalGroupsSequence", []):
        for seq in group:
            if seq.VR == "SQ":
                for item in seq.value:
                    if keyword in item:
                        return item.get(keyword)
    return None


def _str(ds: Dataset | None, keyword: str) -> str:
    try:
        value = ds.get(keyword, "") if ds is not None else ""
        return str(value).strip() if value is not None else ""
    except Exception:  # a malformed element reads as absent
        return ""


# -- the store -----------------------------------------------------------------------------

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS image_metrics (
        instance_id INTEGER PRIMARY KEY REFERENCES instances(id),
        series_uid TEXT NOT NULL,
        metrics_json TEXT NOT NULL,
        error TEXT,
        measured_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS image_metrics_series ON image_metrics(series_uid)",
)


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create ``image_metrics`` (statement by statement: safe inside a transaction)."""
    for sql in _SCHEMA:
        conn.execute(sql)


def from_row(row: Mapping[str, Any]) -> ImageMeasurement:
    doc = json.loads(row["metrics_json"])
    frames = tuple(
        {k: (float(v) if v is not None else math.nan) for k, v in f.items()} for f in doc["frames"]
    )
    return ImageMeasurement(
        sop_instance_uid=str(doc.get("sop_instance_uid", "")),
        series_uid=str(row["series_uid"]),
        modality=str(doc.get("modality", "")),
        frames=frames,
        error=row["error"],
        measured_at=float(row["measured_at"]),
    )


class MetricsStore:
    """Measurements by journal instance id, in the journal's file, under its lock."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        with journal.transaction() as db:
            ensure_schema(db)

    def put(self, instance_id: int, m: ImageMeasurement) -> None:
        with self.journal.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO image_metrics "
                "(instance_id, series_uid, metrics_json, error, measured_at) VALUES (?,?,?,?,?)",
                (instance_id, m.series_uid, m.to_json(), m.error, m.measured_at),
            )

    def get(self, instance_id: int) -> ImageMeasurement | None:
        with self.journal.reading() as db:
            row = db.execute(
                "SELECT * FROM image_metrics WHERE instance_id = ?", (instance_id,)
            ).fetchone()
        return from_row(row) if row else None

    def of_series(self, series_uid: str) -> dict[int, ImageMeasurement]:
        with self.journal.reading() as db:
            rows = db.execute(
                "SELECT * FROM image_metrics WHERE series_uid = ?", (series_uid,)
            ).fetchall()
        return {int(r["instance_id"]): from_row(r) for r in rows}

    def instance_id(self, sop_instance_uid: str, sha256: str) -> int | None:
        """The journal row of a received instance (what the daemon's arrivals carry)."""
        with self.journal.reading() as db:
            row = db.execute(
                "SELECT id FROM instances WHERE sop_instance_uid = ? AND sha256 = ?",
                (sop_instance_uid, sha256),
            ).fetchone()
        return int(row[0]) if row else None

    def measure_and_store(self, instance_id: int, path: Path | str) -> ImageMeasurement:
        """Measure one spooled file and record the result; the per-arrival call."""
        m = measure_file(path)
        self.put(instance_id, m)
        return m
