"""The key image behind a verdict: the slice that drove it, windowed, with its region outlined.

``GET /api/series/<uid>/key-image`` and the thumbnail strip beside it come from
:class:`KeyImageRenderer`, which reads everything from the journal file
(``<storage>/journal.sqlite``, read-only): the series row, its images and their stored QC
measurements (``image_metrics``, :mod:`agent.qc.image_qc`) and the latest Verdict the agent
published (``last_verdicts``, kept by :mod:`agent.alerts.outbox`). Which slice, window and
outline: :mod:`agent.web.regions`. Drawn with numpy and Pillow.

``series_uid`` comes from a URL: it is checked against the DICOM UID grammar, used only as an
SQL parameter, and never in a path; image paths come from the journal and must lie inside
the storage folder. Results are cached per series and recomputed when its verdict or its
images change. The renderer is called from worker threads: one lock serialises the work,
so two requests for a series render it once.
"""

from __future__ import annotations

import io
import json
import math
import re
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image as PILImage
from PIL import ImageDraw
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_rescale

from agent.journal.database import connect
from agent.qc.image_qc import MAX_FRAMES, from_row
from agent.qc.locate import Arc, Box, Circle, Region
from agent.web.regions import (
    AIR_METRICS,
    Driver,
    Image,
    apply_window,
    choose,
    outline,
    window_name,
)
from agent.web.regions_triage import Saliency

F32 = NDArray[np.float32]
UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")
MAX_UID = 64
CACHE_SERIES = 32  # series whose images stay cached
MAX_FILE_BYTES = 512 << 20  # a bigger file is not read for a picture
MAX_PIXELS = 1 << 26  # rows x columns x frames
KEY_SIDE = (512, 1024)  # the key image is scaled to a longer side within this range
THUMB = 64
STRIP_MAX = 48  # thumbnails in the strip (evenly chosen beyond that, flagged ones kept)
STRIP_ROW = 12
QC_COLOUR = (255, 200, 0)
TRIAGE_COLOUR = (255, 60, 60)
KEY_COLOUR = (80, 170, 255)


@dataclass(frozen=True, slots=True)
class _Series:
    row: Mapping[str, Any]
    images: tuple[Image, ...]
    verdict: Mapping[str, Any] | None
    stamp: tuple[object, ...]


class KeyImageRenderer:
    def __init__(self, storage_path: Path, models_dir: Path | None = None) -> None:
        """``models_dir``: the triage models (``triage.models_dir``); None: those shipped."""
        self.storage = Path(storage_path)
        self._saliency = Saliency(models_dir)
        self.journal_path = self.storage / "journal.sqlite"
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[tuple[object, ...], dict[str, bytes | None]]] = (
            OrderedDict()
        )

    def key_image(self, series_uid: str) -> bytes | None:
        """The PNG of the slice that drove the verdict; None: unknown series, nothing to show."""
        return self._cached(series_uid, "key")

    def strip(self, series_uid: str) -> bytes | None:
        """A PNG strip of the series' thumbnails, the flagged slices marked."""
        return self._cached(series_uid, "strip")

    # -- the cache ---------------------------------------------------------------------------

    def _cached(self, series_uid: str, what: str) -> bytes | None:
        if not valid_uid(series_uid):
            return None
        with self._lock:
            series = self._read(series_uid)
            if series is None:
                self._cache.pop(series_uid, None)
                return None
            stamp, done = self._cache.get(series_uid, ((), {}))
            if stamp != series.stamp:
                done = {}
            if what not in done:
                done[what] = self._render(series, what)
            self._cache[series_uid] = (series.stamp, done)
            self._cache.move_to_end(series_uid)
            while len(self._cache) > CACHE_SERIES:
                self._cache.popitem(last=False)
            return done[what]

    def _render(self, series: _Series, what: str) -> bytes | None:
        driver = choose(series.verdict, series.images)
        if driver is None:
            return None
        if what == "key":
            return self._key(series, driver)
        return self._strip(series, driver)

    # -- the journal -------------------------------------------------------------------------

    def _read(self, series_uid: str) -> _Series | None:
        if not self.journal_path.is_file():
            return None
        conn = connect(self.journal_path, readonly=True)
        try:
            return _read_series(conn, series_uid)
        except sqlite3.Error:
            return None  # a journal without the tables yet: nothing to show
        finally:
            conn.close()

    # -- drawing -----------------------------------------------------------------------------

    def _key(self, series: _Series, driver: Driver) -> bytes | None:
        ds = self._dataset(driver.image)
        loaded = _frame_pixels(ds, driver.frame) if ds is not None else None
        if ds is None or loaded is None:
            return None
        pixels, spacing, pe_axis = loaded
        modality = str(series.row.get("modality", ""))
        name = window_name(modality, str(series.row.get("body_part", "")),
                           str(series.row.get("series_description", "")))  # fmt: skip
        grey = apply_window(_display(pixels, modality), name)
        regions, note = outline(driver, pixels, spacing, pe_axis), ""
        if modality.upper() == "CT" and driver.metric in AIR_METRICS:
            air = (pixels < -500.0) & (pixels > -1500.0)  # where it looks, padding left black
            grey = np.where(air, apply_window(_display(pixels, modality), "air"), grey)
            note = " · air shown at -1000 +-150 HU"
        if driver.kind == "triage":
            found = self._saliency.region(ds, driver.frame, driver.model, driver.code)
            regions = [found] if found is not None else regions
            note = " · outlined: where the score depends" if found else " · box: the slice scored"
        colour = TRIAGE_COLOUR if driver.kind == "triage" else QC_COLOUR
        position = series.images.index(driver.image) + 1
        caption = f"{driver.caption()}{note} · slice {position}/{len(series.images)} · {name}"
        return _png(draw_key(grey, regions, colour, caption))

    def _strip(self, series: _Series, driver: Driver) -> bytes | None:
        images = _strip_images(series.images, driver)
        modality = str(series.row.get("modality", ""))
        name = window_name(modality, str(series.row.get("body_part", "")),
                           str(series.row.get("series_description", "")))  # fmt: skip
        rows = math.ceil(len(images) / STRIP_ROW)
        cols = min(len(images), STRIP_ROW)
        canvas = PILImage.new("RGB", (cols * (THUMB + 4), rows * (THUMB + 4)), (20, 20, 20))
        draw = ImageDraw.Draw(canvas)
        for n, image in enumerate(images):
            x, y = (n % STRIP_ROW) * (THUMB + 4), (n // STRIP_ROW) * (THUMB + 4)
            loaded = self._pixels(image, 0)
            if loaded is not None:
                grey = apply_window(_display(loaded[0], modality), name)
                thumb = PILImage.fromarray(grey).resize(
                    (THUMB, THUMB), PILImage.Resampling.BILINEAR
                )
                canvas.paste(thumb.convert("RGB"), (x + 2, y + 2))
            if image.instance_id in driver.flagged or image == driver.image:
                colour = KEY_COLOUR if image == driver.image else (
                    TRIAGE_COLOUR if driver.kind == "triage" else QC_COLOUR)  # fmt: skip
                draw.rectangle((x, y, x + THUMB + 3, y + THUMB + 3), outline=colour, width=2)
        return _png(canvas)

    def _pixels(
        self, image: Image, frame: int
    ) -> tuple[F32, tuple[float, float] | None, int | None] | None:
        """The frame's pixels (HU for CT), its spacing and MR phase-encode axis."""
        ds = self._dataset(image)
        return _frame_pixels(ds, frame) if ds is not None else None

    def _dataset(self, image: Image) -> Dataset | None:
        """The image's data set; None when the file is gone, outside the storage folder, too
        big or not DICOM."""
        try:
            resolved = Path(image.path).resolve(strict=True)
            if not resolved.is_relative_to(self.storage.resolve()):
                return None
            if resolved.stat().st_size > MAX_FILE_BYTES:
                return None
            return dcmread(resolved)
        except Exception:  # a file that cannot be pictured is not a server error
            return None


def valid_uid(series_uid: object) -> bool:
    """A DICOM UID: digits in dot-separated groups, at most 64 characters."""
    return (isinstance(series_uid, str) and 0 < len(series_uid) <= MAX_UID
            and UID_RE.fullmatch(series_uid) is not None)  # fmt: skip


def _read_series(conn: sqlite3.Connection, series_uid: str) -> _Series | None:
    row = conn.execute("SELECT * FROM series WHERE series_uid = ?", (series_uid,)).fetchone()
    if row is None:
        return None
    rows = conn.execute(
        "SELECT id, path, sop_instance_uid, instance_number, slice_position FROM instances "
        "WHERE series_uid = ? AND state != 'purged' ORDER BY id", (series_uid,),
    ).fetchall()  # fmt: skip
    newest = {str(r["sop_instance_uid"]): r for r in rows}  # an amended image replaces the old
    frames = _frames(conn, series_uid)
    images = sorted(
        (Image(int(r["id"]), str(r["sop_instance_uid"]), str(r["path"]), _order(r),
               frames.get(int(r["id"]), ())) for r in newest.values()),
        key=lambda i: (i.order, i.instance_id),
    )  # fmt: skip
    verdict, verdict_at = _verdict(conn, series_uid)
    stamp = (verdict_at, len(images), max((i.instance_id for i in images), default=0),
             sum(1 for i in images if i.frames))  # fmt: skip
    return _Series(dict(row), tuple(images), verdict, stamp)


def _frames(
    conn: sqlite3.Connection, series_uid: str
) -> dict[int, tuple[Mapping[str, float], ...]]:
    try:
        rows = conn.execute("SELECT * FROM image_metrics WHERE series_uid = ?", (series_uid,))
        return {int(r["instance_id"]): from_row(r).frames for r in rows.fetchall()}
    except sqlite3.OperationalError:  # no QC has run on this journal yet
        return {}


def _verdict(conn: sqlite3.Connection, series_uid: str) -> tuple[Mapping[str, Any] | None, float]:
    try:
        row = conn.execute(
            "SELECT payload, updated_at FROM last_verdicts WHERE series_uid = ?", (series_uid,)
        ).fetchone()
    except sqlite3.OperationalError:  # no verdict was ever published on this journal
        return None, 0.0
    if row is None:
        return None, 0.0
    try:
        doc = json.loads(row["payload"])
    except ValueError:
        return None, float(row["updated_at"])
    return (doc if isinstance(doc, dict) else None), float(row["updated_at"])


def _order(r: Mapping[str, Any]) -> float:
    for key in ("slice_position", "instance_number"):
        value = r[key]
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    return float(r["id"])


def _frame_pixels(
    ds: Dataset, measured: int
) -> tuple[F32, tuple[float, float] | None, int | None] | None:
    try:
        return _decode(ds, measured)
    except Exception:  # undecodable pixel data: nothing to show
        return None


def _decode(
    ds: Dataset, measured: int
) -> tuple[F32, tuple[float, float] | None, int | None] | None:
    if "PixelData" not in ds or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return None
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if rows < 8 or cols < 8 or rows * cols * n > MAX_PIXELS:
        return None
    arr = ds.pixel_array
    stack = arr.reshape((-1, rows, cols)) if n > 1 else arr[None]
    picks = _picks(stack.shape[0])
    frame = stack[picks[min(measured, len(picks) - 1)]]
    modality = str(ds.get("Modality", "")).upper()
    if modality == "CT":
        pixels = np.asarray(apply_rescale(frame, ds), dtype=np.float32)
    else:
        pixels = np.asarray(frame, dtype=np.float32)
        if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            pixels = float(pixels.max()) - pixels  # displayed as MONOCHROME2
    return pixels, _spacing(ds), _pe_axis(ds)


def _picks(n: int) -> list[int]:
    """The frames QC measured (:func:`agent.qc.image_qc._pick_frames`)."""
    if n <= MAX_FRAMES:
        return list(range(n))
    return sorted({round(i) for i in np.linspace(0, n - 1, MAX_FRAMES)})


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    try:
        row, col = (float(v) for v in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        return None
    return (row, col) if all(math.isfinite(v) and v > 0 for v in (row, col)) else None


def _pe_axis(ds: Dataset) -> int | None:
    direction = str(ds.get("InPlanePhaseEncodingDirection", "") or "").strip().upper()
    return 0 if direction == "COL" else 1 if direction == "ROW" else None


def _display(pixels: F32, modality: str) -> F32:
    """CT padding outside the scan circle shows as air, not as a black hole in the window."""
    if modality.upper() == "CT":
        return np.maximum(pixels, -1024.0)
    return pixels


def _strip_images(images: Sequence[Image], driver: Driver) -> list[Image]:
    if len(images) <= STRIP_MAX:
        return list(images)
    keep = {driver.image.instance_id, *driver.flagged}
    even = {images[round(i)].instance_id for i in np.linspace(0, len(images) - 1, STRIP_MAX)}
    chosen = [i for i in images if i.instance_id in keep]
    chosen += [i for i in images if i.instance_id in even and i.instance_id not in keep]
    return sorted(chosen[:STRIP_MAX], key=images.index)


def draw_key(
    grey: NDArray[np.uint8], regions: Sequence[Region], colour: tuple[int, int, int], caption: str
) -> PILImage.Image:
    """The windowed slice scaled for a console screen, the regions outlined, a caption bar."""
    h, w = grey.shape
    side = min(max(max(h, w), KEY_SIDE[0]), KEY_SIDE[1])
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    picture = PILImage.fromarray(grey).resize(size, PILImage.Resampling.BILINEAR).convert("RGB")
    canvas = PILImage.new("RGB", (size[0], size[1] + 22), (0, 0, 0))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for region in regions:
        _draw_region(draw, region, scale, colour)
    draw.text((6, size[1] + 5), caption[:120], fill=(235, 235, 235))
    return canvas


def _draw_region(
    draw: ImageDraw.ImageDraw, region: Region, scale: float, colour: tuple[int, int, int]
) -> None:
    def at(v: float) -> float:  # pixel centres: source pixel i spans [i, i + 1) scaled
        return (v + 0.5) * scale - 0.5

    if isinstance(region, Circle):
        r = region.r * scale
        box = (at(region.cx) - r, at(region.cy) - r, at(region.cx) + r, at(region.cy) + r)
        draw.ellipse(box, outline=colour, width=3)
    elif isinstance(region, Arc):
        r = region.r * scale
        box = (at(region.cx) - r, at(region.cy) - r, at(region.cx) + r, at(region.cy) + r)
        draw.arc(box, region.start, region.end, fill=colour, width=5)
    elif isinstance(region, Box):
        draw.rectangle((at(region.x0), at(region.y0), at(region.x1), at(region.y1)),
                       outline=colour, width=3)  # fmt: skip


def _png(image: PILImage.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()
