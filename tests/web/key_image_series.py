"""Series stored the way the agent stores them, for the key image tests: files in the spool,
rows in the journal, QC measured per image, the verdict in ``last_verdicts``; and the PNG's
outline pixels read back."""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset

from agent.alerts.outbox import Outbox
from agent.domain.verdicts import Triage, Verdict
from agent.journal.database import Journal
from agent.qc.image_qc import MetricsStore
from agent.qc.protocols import load_protocols
from agent.qc.verdict import series_verdict
from agent.receive.local_ingest import store_dataset
from agent.receive.spool import Spool


def store_series(
    storage: Path, datasets: Sequence[Dataset | Path], triage: Triage | None = None
) -> Verdict:
    """Store, measure and judge one series as the daemon does; returns its verdict."""
    spool = Spool(storage, min_free_bytes=0)
    journal = Journal.open(spool.journal_path)
    outbox = Outbox.open(spool.journal_path)
    try:
        metrics = MetricsStore(journal)
        uid = ""
        for item in datasets:
            ds = dcmread(item) if isinstance(item, Path) else item
            inst = store_dataset(ds, spool, journal)
            assert inst is not None
            iid = metrics.instance_id(inst.sop_instance_uid, inst.sha256)
            assert iid is not None
            metrics.measure_and_store(iid, inst.path)
            uid = inst.series_uid
        journal.mark_complete(uid, "count", time.time())
        verdict = series_verdict(journal, uid, load_protocols(), state="held", store=metrics)
        if triage is not None:
            verdict = replace(verdict, triage=triage)
        outbox.put(verdict=(uid, verdict.to_json()))
        return verdict
    finally:
        outbox.close()
        journal.close()


def outline_pixels(png: bytes, colour: tuple[int, int, int]) -> tuple[NDArray[np.intp], ...]:
    """(rows, columns) of the pixels drawn in ``colour``, above the caption bar."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    picture = rgb[:-22]  # the caption bar
    near = np.abs(picture - np.array(colour)).sum(axis=2) < 40
    return tuple(np.nonzero(near))


def picture(png: bytes) -> NDArray[np.uint8]:
    """The image part of the key image as greys (the caption bar cut off)."""
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    out: NDArray[np.uint8] = grey[:-22]
    return out


__all__ = ["outline_pixels", "picture", "store_series"]
