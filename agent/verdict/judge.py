"""The series' judge: at completion, its QC verdict and the report that travels with it.

What the verdict means for the series (DESIGN: fail open for the patient):
    fail  held for the technologist (an alert with action ``repeat``); forwarded flagged
          after the hold timeout if nobody decides
    warn  released, with an alert asking for ``review``
    pass  released
The QC and triage reports go to the PACS as TID 1500 Measurement Reports, and the key images
as a KOS, each in its own series, after their source (:mod:`agent.verdict.results`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from agent.domain.verdicts import QC, Alert, Reason, Triage, Verdict, alert_for
from agent.journal import drift_log, verdict_log
from agent.journal.database import Journal
from agent.journal.message_queue import message_states
from agent.qc.image_qc import MetricsStore
from agent.qc.protocols import Protocol, Protocols, match_protocol
from agent.qc.series_qc import SeriesFacts, facts_from_row
from agent.qc.sr import qc_sr, worst_images
from agent.qc.verdict import series_verdict
from agent.receive.spool import Spool
from agent.triage.engine import SeriesTriage
from agent.triage.scoring import priority_for, triage_alert
from agent.triage.sr import triage_sr
from agent.triage.stage import TriageTracker
from agent.verdict.in_flight import WAIT_S, InFlight
from agent.verdict.results import (
    REJECTED_EVENT,
    already_rejected,
    file_results,
    key_images,
    rejection_note,
    series_sources,
)  # fmt: skip

log = logging.getLogger(__name__)

# QC switched off in the config: nothing is measured or judged, and the verdict says so.
NO_QC = QC(
    status="pass", reasons=(Reason("qc.disabled", "QC is switched off (qc.enabled: false)"),)
)


RECENT_SERIES = 512


class Judge:
    def __init__(
        self, journal: Journal, spool: Spool, store: MetricsStore, protocols: Protocols | None,
        triage: TriageTracker | None = None, in_flight: InFlight | None = None,
    ) -> None:  # fmt: skip
        self.journal = journal
        self.in_flight = in_flight
        self.spool = spool
        self.store = store
        self.protocols = protocols
        self.triage = triage
        self.qc_fallback_images = 0  # images QC measured at completion, not on arrival
        # recent series' triage, for re-published verdicts and reports; bounded, oldest out
        self._triage_of: OrderedDict[str, tuple[Triage | None, SeriesTriage | None]] = OrderedDict()

    def judge(self, series_uid: str) -> Verdict:
        """QC and triage of a complete series; records its triage priority in the journal,
        so stat and urgent series go first and with C-STORE priority HIGH."""
        if self.in_flight is not None and not self.in_flight.wait(series_uid):
            log.warning("series %s: %d image(s) still in per-image work after %.0f s; "
                        "the verdict measures them itself", series_uid,
                        self.in_flight.pending(series_uid), WAIT_S)  # fmt: skip
        verdict = self.verdict(series_uid, "complete")
        if self.triage is not None:
            verdict = self._triaged(verdict)
        judged = self._judged(verdict)
        with self.journal.transaction() as db:  # drift samples and the /metrics counters
            drift_log.record(db, series_uid, drift_samples(verdict))
            verdict_log.record(db, judged)
        return verdict

    def _protocol(self, facts: SeriesFacts) -> Protocol | None:
        """The QC protocol the series was judged under (None: QC off, or none matched)."""
        if self.protocols is None:
            return None
        return match_protocol(self.protocols, facts.modality, facts.body_part,
                              facts.series_description)  # fmt: skip

    def _judged(self, verdict: Verdict) -> verdict_log.Judged:
        facts = facts_from_row(self.journal.series_row(verdict.series_uid) or {})
        matched = self._protocol(facts)
        protocol = matched.name if matched else "none" if self.protocols else "qc-disabled"
        last = facts.last_image_at
        latency = time.time() - last if last is not None else math.nan
        scores = [(f.model, f.label, float(f.score))
                  for f in (verdict.triage.findings if verdict.triage else ())]  # fmt: skip
        return verdict_log.Judged(verdict.series_uid, protocol, verdict.qc.status, latency, scores)

    def _triaged(self, verdict: Verdict) -> Verdict:
        assert self.triage is not None
        series_uid = verdict.series_uid
        triage, acc = self.triage.finish(series_uid)
        self._triage_of[series_uid] = (triage, acc)
        self._triage_of.move_to_end(series_uid)
        while len(self._triage_of) > RECENT_SERIES:
            self._triage_of.popitem(last=False)
        priority = priority_for(triage)
        with self.journal.transaction() as db:
            db.execute(
                "UPDATE series SET priority = ? WHERE series_uid = ?", (priority, series_uid)
            )
        return replace(verdict, triage=triage)

    def findings(self, series_uid: str) -> tuple[str, ...]:
        triage = self._triage_of.get(series_uid, (None, None))[0]
        return tuple(f.label for f in triage.findings if f.mode == "active") if triage else ()

    def verdict(self, series_uid: str, state: str) -> Verdict:
        """The series' verdict in ``state``, with its latest triage when it has one."""
        verdict = self._qc_verdict(series_uid, state)
        triage = self._triage_of.get(series_uid, (None, None))[0]
        return replace(verdict, triage=triage) if triage else verdict

    def _qc_verdict(self, series_uid: str, state: str) -> Verdict:
        if self.protocols is None:
            row = self.journal.series_row(series_uid) or {}
            return Verdict(
                study_uid=row.get("study_uid", ""), series_uid=series_uid,
                modality=row.get("modality", ""), state=state, qc=NO_QC,
                instances=len(self.journal.instances_of(series_uid)),
            )  # fmt: skip
        return series_verdict(
            self.journal, series_uid, self.protocols, state=state, store=self.store,
            on_fallback=self._count_qc_fallback,
        )  # fmt: skip

    def _count_qc_fallback(self, images: int) -> None:
        self.qc_fallback_images += images

    @property
    def triage_fallback_images(self) -> int:
        """Images triage scored at completion, not on arrival."""
        return self.triage.fallback_images if self.triage is not None else 0

    def deliveries(self, verdict: Verdict) -> Verdict:
        """The verdict with the per-destination delivery state filled in from the journal."""
        with self.journal.reading() as db:
            rows = db.execute(
                """SELECT d.destination, GROUP_CONCAT(DISTINCT d.state) FROM deliveries d
                   JOIN instances i ON i.id = d.instance_id WHERE i.series_uid = ?
                   GROUP BY d.destination""",
                (verdict.series_uid,),
            ).fetchall()
            messages = message_states(db, verdict.series_uid)  # HL7 and FHIR destinations
        deliveries = {dest: _summary(states) for dest, states in rows} | messages
        return replace(verdict, deliveries=deliveries)

    def report(self, verdict: Verdict, destinations: list[str]) -> list[str]:
        """Store the QC and triage reports (TID 1500) and the key-image KOS, queued behind
        their source series; their series UIDs. One header is read for all three; the
        instances come from the journal."""
        source = verdict.series_uid
        sources = series_sources(self.journal, source)
        if sources is None:
            return []
        reports: list[Dataset | None] = []
        worst: dict[str, list[str]] = {}
        if self.protocols is not None:
            protocol = self._protocol(facts_from_row(self.journal.series_row(source) or {}))
            worst = worst_images(verdict.qc, self.store.of_series(source).values(), protocol)
            sr_series = generate_uid(entropy_srcs=["qc-sr", source])
            reports.append(_built("QC", source, lambda: qc_sr(
                verdict.qc, sources.header, sources.instances, series_instance_uid=sr_series, worst=worst,
                protocol=protocol.name if protocol else None)))  # fmt: skip
        triage, acc = self._triage_of.get(source, (None, None))
        if triage is not None and acc is not None and (header := acc.header) is not None:
            reports.append(_built("triage", source, lambda: triage_sr(
                triage, header, acc.instances)))  # fmt: skip
        qc = verdict.qc if self.protocols is not None else None
        reports.append(_built("key images", source, lambda: key_images(qc, worst, triage, sources)))
        return file_results(self.journal, self.spool, list(filter(None, reports)), source,
                            destinations)  # fmt: skip

    def reject(self, series_uid: str, by: str, destinations: list[str]) -> str | None:
        """File the IOCM rejection KOS of a series marked for a repeat, once; its series UID.
        The journal's ``rejected`` event records it (the repeat rate counts the audit)."""
        if already_rejected(self.journal, series_uid):
            return None
        sources = series_sources(self.journal, series_uid)
        if sources is None:
            log.warning("rejection report skipped for series %s: no stored instance to reject",
                        series_uid)  # fmt: skip
            return None
        note = _built("rejection", series_uid, lambda: rejection_note(sources, by))
        if note is None:
            return None
        (uid,) = file_results(self.journal, self.spool, [note], series_uid, destinations)
        self.journal.record_event(REJECTED_EVENT, series_uid, f"rejection note {note.SOPInstanceUID}"
                                  f" queued for {', '.join(destinations) or 'no destination'}")  # fmt: skip
        return uid


def _built(kind: str, series_uid: str, build: Callable[[], Dataset | None]) -> Dataset | None:
    """A report, or None with a warning: real headers are often non-conformant, and a report
    that cannot be built must never stop the series it describes (it is forwarded anyway)."""
    try:
        return build()
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        log.warning("%s report skipped for series %s: %s", kind, series_uid, exc)
        return None


def drift_samples(verdict: Verdict) -> list[tuple[str, float]]:
    """``qc:<modality>:<metric>`` (series medians) and ``triage:<model>:<label>`` scores."""
    samples = [
        (f"qc:{verdict.modality}:{name.removesuffix('.median')}", float(value))
        for name, value in verdict.qc.metrics.items()
        if name.endswith(".median") and math.isfinite(float(value))
    ]
    for f in verdict.triage.findings if verdict.triage else ():
        samples.append((f"triage:{f.model}:{f.label}", float(f.score)))
    return samples


def alerts_of(verdict: Verdict) -> list[Alert]:
    """The QC alert (fail: repeat; warn: review) and the triage alert (critical for stat)."""
    out = []
    if verdict.qc.status == "fail":
        out.append(alert_for(verdict, "qc", "critical", "repeat"))
    elif verdict.qc.status == "warn":
        out.append(alert_for(verdict, "qc", "warning", "review"))
    if verdict.triage is not None and (triage := triage_alert(verdict)) is not None:
        out.append(triage)
    return out


def _summary(states: str) -> str:
    found = set(states.split(","))
    for state in ("queued", "quarantined", "delivered", "dropped"):
        if state in found:
            return state
    return states
