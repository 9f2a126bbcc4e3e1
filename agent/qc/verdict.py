"""A series' Verdict from its QC: the one path shared by the daemon and ``inspect``.

:func:`build_verdict` turns facts and measurements into the contract's Verdict;
:func:`series_verdict` is what the daemon calls when the assembler completes a series: it
reads the measurements stored at arrival (measuring any that are missing, e.g. after a
restart) and builds the same Verdict ``scanner-agent inspect`` prints for the same files.
Measuring at completion is a fallback: it logs ``qc fallback: measured N images at
completion for series X`` and tells ``on_fallback`` how many, so a dead per-arrival path
shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from agent.domain.verdicts import QC, Reason, Verdict
from agent.journal import series_notes
from agent.journal.database import Journal
from agent.qc.image_qc import ImageMeasurement, MetricsStore
from agent.qc.protocols import Protocols, match_protocol
from agent.qc.series_qc import SeriesFacts, evaluate_series, facts_from_row

log = logging.getLogger(__name__)


def build_verdict(
    facts: SeriesFacts,
    measurements: Iterable[ImageMeasurement],
    protocols: Protocols,
    *,
    state: str,
    instances: int,
    deliveries: Mapping[str, str] | None = None,
    notes: Sequence[Reason] = (),
) -> Verdict:
    """Evaluate the series under its matched protocol and wrap the result in a Verdict.
    ``notes`` (what reconstruction had to assume) are warning reasons: at least ``warn``."""
    protocol = match_protocol(protocols, facts.modality, facts.body_part, facts.series_description)
    qc = with_notes(evaluate_series(measurements, protocol, facts, protocols.aggregation), notes)
    return Verdict(
        study_uid=facts.study_uid,
        series_uid=facts.series_uid,
        modality=facts.modality,
        instances=instances,
        state=state,
        qc=qc,
        triage=None,
        deliveries=dict(deliveries or {}),
        series_description=facts.series_description,
        accession_number=facts.accession_number,
        station_name=facts.station_name,
        last_image_at=facts.last_image_at,
    )


def series_verdict(
    journal: Journal,
    series_uid: str,
    protocols: Protocols,
    *,
    state: str,
    store: MetricsStore | None = None,
    deliveries: Mapping[str, str] | None = None,
    on_fallback: Callable[[int], None] | None = None,
) -> Verdict:
    """The Verdict of a journal series from stored measurements, measuring missing ones.

    The latest version of each SOP instance counts (an amended image replaces the old).
    ``on_fallback`` gets the number of images measured here, when there were any.
    Raises KeyError when the journal does not know the series.
    """
    row = journal.series_row(series_uid)
    if row is None:
        raise KeyError(f"unknown series {series_uid}")
    store = store or MetricsStore(journal)
    latest = _latest_instances(journal, series_uid)
    stored = store.of_series(series_uid)
    missed = [(iid, path) for iid, path in latest if iid not in stored]
    for iid, path in missed:
        stored[iid] = store.measure_and_store(iid, path)
    if missed:
        log.info(
            "qc fallback: measured %d images at completion for series %s", len(missed), series_uid
        )
        if on_fallback is not None:
            on_fallback(len(missed))
    measurements = [stored[iid] for iid, _ in latest]
    with journal.reading() as db:
        notes = [Reason(code, message) for code, message in series_notes.notes_of(db, series_uid)]
    return build_verdict(
        facts_from_row(row), measurements, protocols,
        state=state, instances=len(latest), deliveries=deliveries, notes=notes,
    )  # fmt: skip


def with_notes(qc: QC, notes: Sequence[Reason]) -> QC:
    if not notes:
        return qc
    status = "warn" if qc.status == "pass" else qc.status
    return replace(qc, status=status, reasons=(*qc.reasons, *notes))


def _latest_instances(journal: Journal, series_uid: str) -> list[tuple[int, str]]:
    """(instance id, spool path) of the newest version of each SOP instance, in id order."""
    with journal.reading() as db:
        rows = db.execute(
            "SELECT id, path, sop_instance_uid FROM instances "
            "WHERE series_uid = ? AND state != 'purged' ORDER BY id",
            (series_uid,),
        ).fetchall()
    newest: dict[str, tuple[int, str]] = {}
    for r in rows:
        newest[str(r["sop_instance_uid"])] = (int(r["id"]), str(r["path"]))
    return sorted(newest.values())
