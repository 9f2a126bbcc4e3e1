"""The series' judge: at completion, its QC verdict and the report that travels with it.

What the verdict means for the series (DESIGN: fail open for the patient):
    fail  held for the technologist (an alert with action ``repeat``); forwarded flagged
          after the hold timeout if nobody decides
    warn  released, with an alert asking for ``review``
    pass  released
The QC report goes to the PACS as a Comprehensive SR in its own series, after its source.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from pydicom import dcmread
from pydicom.uid import generate_uid

from agent.image_qc import MetricsStore
from agent.journal import Journal
from agent.local_ingest import store_dataset
from agent.qc_protocols import Protocols
from agent.qc_sr import qc_sr
from agent.qc_verdict import series_verdict
from agent.spool import Spool
from agent.verdict import QC, Alert, Reason, Verdict, alert_for

log = logging.getLogger(__name__)

# QC switched off in the config: nothing is measured or judged, and the verdict says so.
NO_QC = QC(
    status="pass", reasons=(Reason("qc.disabled", "QC is switched off (qc.enabled: false)"),)
)


class Judge:
    def __init__(
        self, journal: Journal, spool: Spool, store: MetricsStore, protocols: Protocols | None
    ) -> None:
        self.journal = journal
        self.spool = spool
        self.store = store
        self.protocols = protocols

    def verdict(self, series_uid: str, state: str) -> Verdict:
        if self.protocols is None:
            row = self.journal.series_row(series_uid) or {}
            return Verdict(
                study_uid=row.get("study_uid", ""), series_uid=series_uid,
                modality=row.get("modality", ""), state=state, qc=NO_QC,
                instances=len(self.journal.instances_of(series_uid)),
            )  # fmt: skip
        return series_verdict(
            self.journal, series_uid, self.protocols, state=state, store=self.store
        )

    def deliveries(self, verdict: Verdict) -> Verdict:
        """The verdict with the per-destination delivery state filled in from the journal."""
        with self.journal.reading() as db:
            rows = db.execute(
                """SELECT d.destination, GROUP_CONCAT(DISTINCT d.state) FROM deliveries d
                   JOIN instances i ON i.id = d.instance_id WHERE i.series_uid = ?
                   GROUP BY d.destination""",
                (verdict.series_uid,),
            ).fetchall()
        return replace(verdict, deliveries={dest: _summary(states) for dest, states in rows})

    def report(self, verdict: Verdict, destinations: list[str]) -> str | None:
        """Store the QC SR and queue it behind its source series; returns its series UID."""
        if self.protocols is None:
            return None
        headers = [
            dcmread(i.path, stop_before_pixels=True)
            for i in self.journal.instances_of(verdict.series_uid)
        ]
        if not headers:
            return None
        sr_series = generate_uid(entropy_srcs=["qc-sr", verdict.series_uid])
        sr = qc_sr(verdict.qc, headers, series_instance_uid=sr_series)
        stored = store_dataset(sr, self.spool, self.journal)
        if stored is None:
            return sr_series
        self.journal.mark_derived(sr_series, verdict.series_uid)
        self.journal.release_series(sr_series, destinations, "qc report")
        return sr_series


def alert_of(verdict: Verdict) -> Alert | None:
    if verdict.qc.status == "fail":
        return alert_for(verdict, "qc", "critical", "repeat")
    if verdict.qc.status == "warn":
        return alert_for(verdict, "qc", "warning", "review")
    return None


def _summary(states: str) -> str:
    found = set(states.split(","))
    for state in ("queued", "quarantined", "delivered", "dropped"):
        if state in found:
            return state
    return states
