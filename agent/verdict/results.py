"""The Key Object Selection documents of a series, and filing result objects for the PACS.

Two KOS kinds (highdicom ``hd.ko``), both in new series of the source study, with the
patient and study attributes of :func:`agent.domain.results.study_context`:

- **Key images** ("Of Interest", 113000 DCM): the worst image of each QC reason and the
  slices that drove each active triage finding. None when the series has neither.
- **Rejection note** ("Rejected for Quality Reasons", 113001 DCM, CID 7011; IHE IOCM): every
  instance of a series the technologist marked for a repeat, so the PACS can hide it from
  reading. Filed once per series: the journal's ``rejected`` event records it.

Result objects are stored in the spool and journal like received images, marked derived
from their source (so they are forwarded after it) and queued for the source's destinations.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import generate_uid

from agent.domain.results import (
    OF_INTEREST,
    REJECTED_FOR_QUALITY,
    evidence,
    key_object_selection,
    study_context,
)  # fmt: skip
from agent.domain.verdicts import QC, Triage
from agent.journal.database import Journal
from agent.receive.local_ingest import store_dataset
from agent.receive.spool import Spool

log = logging.getLogger(__name__)

KEY_IMAGES_DESCRIPTION = "Key images (scanner-agent)"
REJECTION_DESCRIPTION = "Rejected for Quality Reasons"
KEY_IMAGES_SERIES, REJECTION_SERIES = 9903, 9904
REJECTED_EVENT = "rejected"


@dataclass(frozen=True, slots=True)
class SeriesSources:
    """What every result object needs of its source series: one header (patient, study,
    series, matrix) and each stored instance's ``(SOPClassUID, SOPInstanceUID)``."""

    header: Dataset
    instances: tuple[tuple[str, str], ...]


def series_sources(journal: Journal, series_uid: str) -> SeriesSources | None:
    """The series' instances as the journal lists them (the newest version of each, in
    arrival order) and the header of the first one that can be read: one file, not the
    series. None when no instance is stored or none can be read."""
    newest = {i.sop_instance_uid: i for i in journal.instances_of(series_uid)}  # amended: last
    pairs = tuple((i.sop_class_uid, uid) for uid, i in newest.items())
    for inst in newest.values():
        try:
            return SeriesSources(dcmread(inst.path, stop_before_pixels=True), pairs)
        except (OSError, InvalidDicomError) as exc:
            log.warning("result objects of series %s: %s not read: %s", series_uid, inst.path, exc)
    return None


def _references(sources: SeriesSources, ctx: Dataset) -> list[Dataset]:
    """What a KOS references: evidence stubs with the context (highdicom reads its Type 2
    attributes from them) and, for instances of the header's class, its matrix: that makes
    highdicom select them as IMAGE (a viewer's key image) rather than as bare COMPOSITE
    objects. highdicom reads only whether a matrix is there, not its value."""
    header = sources.header
    refs = evidence(ctx, header, sources.instances)
    for ref in refs:
        if ref.SOPClassUID == header.get("SOPClassUID"):
            for keyword in ("Rows", "Columns"):
                if keyword in header:
                    ref[keyword] = header[keyword]
    return refs


def key_images(
    qc: QC | None, worst: Mapping[str, Sequence[str]], triage: Triage | None,
    sources: SeriesSources,
) -> Dataset | None:  # fmt: skip
    """The key-image KOS of a series, or None when nothing in it stands out."""
    chosen: dict[str, None] = {}  # ordered, without duplicates
    notes = []
    for r in qc.reasons if qc else ():
        if uids := list(worst.get(r.code, ())):
            chosen.update(dict.fromkeys(uids))
            notes.append(f"worst image for QC {r.code} ({r.value} vs {r.threshold})")
    for f in triage.findings if triage else ():
        if f.mode == "active" and f.slices:
            chosen.update(dict.fromkeys(f.slices))
            notes.append(f"slices that drove {f.label} (score {f.score:.3f}, {f.priority})")
    ctx = study_context(sources.header, "key images KOS")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in _references(sources, ctx)}
    refs = [by_uid[u] for u in chosen if u in by_uid]
    if not refs:
        return None
    source = str(sources.header.SeriesInstanceUID)
    return key_object_selection(
        OF_INTEREST, ctx, refs, "scanner-agent key images: " + "; ".join(notes),
        series_instance_uid=generate_uid(entropy_srcs=["key-images", source]),
        series_number=KEY_IMAGES_SERIES, series_description=KEY_IMAGES_DESCRIPTION,
    )  # fmt: skip


def rejection_note(sources: SeriesSources, by: str) -> Dataset:
    """The IOCM rejection KOS of a whole series (every instance in ``sources``)."""
    if not sources.instances:
        raise ValueError("no stored instance to reject")
    ctx = study_context(sources.header, "rejection KOS")
    source = str(sources.header.SeriesInstanceUID)
    return key_object_selection(
        REJECTED_FOR_QUALITY, ctx, _references(sources, ctx),
        f"Repeat requested at the scanner by {by}: series rejected for quality reasons",
        series_instance_uid=generate_uid(entropy_srcs=["rejection", source]),
        sop_instance_uid=generate_uid(entropy_srcs=["rejection-note", source]),
        series_number=REJECTION_SERIES, series_description=REJECTION_DESCRIPTION,
    )  # fmt: skip


def file_results(
    journal: Journal, spool: Spool, results: Sequence[Dataset], source: str,
    destinations: Sequence[str],
) -> list[str]:  # fmt: skip
    """Store each result object, derived from ``source`` and queued for ``destinations``
    behind it; their series UIDs."""
    uids = []
    for ds in results:
        store_dataset(ds, spool, journal)  # None: identical bytes already stored
        uid = str(ds.SeriesInstanceUID)
        journal.mark_derived(uid, source)
        journal.release_series(uid, list(destinations), "result object")
        uids.append(uid)
    return uids


def already_rejected(journal: Journal, series_uid: str) -> bool:
    with journal.reading() as db:
        row = db.execute(
            "SELECT 1 FROM events WHERE kind = ? AND series_uid = ? LIMIT 1",
            (REJECTED_EVENT, series_uid),
        ).fetchone()
    return row is not None
