"""The forwarding gate: which complete series may leave for the PACS, and where to.

Only released series are forwarded. A series that fails QC is held; one the technologist
held while it arrived stays held. A held series is released by the technologist, or, past
``forward.hold_timeout_s``, by the clock, flagged: the agent must never be the reason a study
does not reach the PACS. A stat finding never waits: a QC-held series with one is forwarded
at once, flagged and with C-STORE priority HIGH, while it stays held (``expedited``). A hold
the technologist placed is kept even then: it may mean the wrong patient.
With ``worklist:`` configured, a series whose accession number and patient ID the RIS
worklist does not confirm is held with a ``worklist`` alert before QC is looked at, and a
stat finding does not expedite it (see worklist.py).
Released instances are queued, durably in the journal, for the destinations the routing
rules choose.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import anyio
import anyio.to_thread

from agent.config import ForwardConfig
from agent.domain.instances import SeriesComplete, SeriesState
from agent.domain.verdicts import Alert, Reason, Verdict, alert_for
from agent.journal.database import Journal
from agent.triage.scoring import priority_for
from agent.verdict.judge import Judge, alerts_of
from agent.verdict.messages import image_destinations, message_destinations, queue_verdict
from agent.verdict.routing import RouteFacts, destinations_for
from agent.verdict.worklist import WorklistCheck

log = logging.getLogger(__name__)


Publish = Callable[[Verdict, list[Alert]], Awaitable[None]]


async def _no_publish(verdict: Verdict, alerts: list[Alert]) -> None:
    return None


class ReleaseGate:
    def __init__(
        self, journal: Journal, cfg: ForwardConfig, on_queued: Callable[[], None] = lambda: None,
        judge: Judge | None = None, publish: Publish = _no_publish,
        worklist: WorklistCheck | None = None,
    ) -> None:  # fmt: skip
        self.worklist = worklist
        self._worklist_alerts: dict[str, Alert] = {}  # from on_complete to its publication
        self.journal = journal
        self.cfg = cfg
        self.on_queued = on_queued
        self.judge = judge
        self.publish = publish

    async def __call__(self, done: SeriesComplete) -> SeriesComplete:
        """Judge, hold or release, publish the verdict and its alerts; only then build the
        QC and triage reports (building an SR for 300 images takes about half a second and
        the technologist must not wait for paperwork)."""
        verdict = await anyio.to_thread.run_sync(self.on_complete, done.series_uid)
        if verdict is not None:
            extra = self._worklist_alerts.pop(done.series_uid, None)
            await self.publish(verdict, alerts_of(verdict) + ([extra] if extra else []))
            await anyio.to_thread.run_sync(self.file_messages, verdict)
            await anyio.to_thread.run_sync(self.file_reports, verdict)
        return done

    def on_complete(self, series_uid: str) -> Verdict | None:
        """Judge a complete series, then hold or release it; returns its verdict. The
        reports come after (:meth:`file_reports`).

        A series the technologist held while it was arriving stays held whatever its QC.
        """
        verdict = self.judge.judge(series_uid) if self.judge else None
        if self.journal.series_state(series_uid) == SeriesState.HELD:
            log.info("series %s complete but held: waiting for the technologist", series_uid)
            state = SeriesState.HELD
        elif self._worklist_holds(series_uid, verdict):
            state = SeriesState.HELD
        elif verdict is not None and verdict.qc.status == "fail":
            codes = ", ".join(r.code for r in verdict.qc.reasons)
            self.journal.hold_series(series_uid, f"qc fail: {codes}")
            log.warning("series %s failed QC (%s): held for the technologist", series_uid, codes)
            state = SeriesState.HELD
            if priority_for(verdict.triage) == "stat":
                self.expedite(series_uid)
        else:
            self.release(series_uid, "complete", False)
            state = SeriesState.RELEASED
        if verdict is None or self.judge is None:
            return None
        return self.judge.deliveries(replace(verdict, state=state))

    def _worklist_holds(self, series_uid: str, verdict: Verdict | None) -> bool:
        """Hold the series when the RIS worklist does not confirm it; the alert waits for
        the verdict's publication."""
        if self.worklist is None:
            return False
        outcome = self.worklist.check_series(self.journal, series_uid)
        if not outcome.holds:
            log.info("series %s: %s", series_uid, outcome.message)
            return False
        self.journal.hold_series(series_uid, f"{outcome.code}: {outcome.message}")
        log.warning("series %s held: %s", series_uid, outcome.message)
        if verdict is not None:
            reason = Reason(outcome.code, outcome.message)
            self._worklist_alerts[series_uid] = alert_for(
                verdict, "worklist", "warning", "review", (reason,)
            )
        return True

    def file_reports(self, verdict: Verdict) -> list[str]:
        """Store the series' QC and triage SRs, queued behind it; their series UIDs."""
        if self.judge is None:
            return []
        uids = self.judge.report(verdict, self.destinations(verdict.series_uid))
        if uids:
            self.on_queued()
        return uids

    def reject(self, series_uid: str, by: str) -> str | None:
        """The technologist asked for a repeat: file the series' rejection KOS for its
        destinations (IOCM, so the PACS hides it). A failure is logged, never raised: the
        repeat itself is already recorded."""
        if self.judge is None:
            return None
        try:
            uid = self.judge.reject(series_uid, by, self.destinations(series_uid))
        except Exception:
            log.exception("rejection note of series %s not filed", series_uid)
            return None
        if uid:
            log.info("series %s rejected for quality reasons: rejection note queued", series_uid)
            self.on_queued()
        return uid

    def file_messages(self, verdict: Verdict) -> int:
        """Queue the verdict for the routed HL7 and FHIR destinations."""
        names = message_destinations(self.cfg, self.routed(verdict.series_uid))
        queued = queue_verdict(self.journal, verdict, names)
        if queued:
            self.on_queued()
        return queued

    async def announce(self, series_uid: str, state: str) -> None:
        """Publish a series' verdict again after its state changed (a command, a timeout)."""
        if self.judge is None:
            return
        judge = self.judge
        verdict = await anyio.to_thread.run_sync(
            lambda: judge.deliveries(judge.verdict(series_uid, state))
        )
        await self.publish(verdict, [])

    def destinations(self, series_uid: str) -> list[str]:
        """The routed destinations that take images (HL7 and FHIR ones take verdicts)."""
        return image_destinations(self.cfg, self.routed(series_uid))

    def routed(self, series_uid: str) -> list[str]:
        row = self.journal.series_row(series_uid) or {}
        findings = self.judge.findings(series_uid) if self.judge else ()
        facts = RouteFacts(
            modality=row.get("modality", ""),
            body_part=row.get("body_part", ""),
            station_name=row.get("station_name", ""),
            calling_aet=row.get("calling_aet", ""),
            series_description=row.get("series_description", ""),
            priority=row.get("priority", "routine"),
            findings=findings,
        )
        return destinations_for(self.cfg, facts)

    def expedite(self, series_uid: str) -> int:
        """Forward a QC-held series with a stat finding now, flagged; it stays held for the
        technologist's decision, and the QC alert still goes out."""
        destinations = self.destinations(series_uid)
        queued = self.journal.expedite_series(series_uid, destinations, "stat finding")
        log.warning(
            "series %s has a stat finding: forwarded flagged to %s while QC holds it",
            series_uid, ", ".join(destinations) or "nowhere",
        )  # fmt: skip
        self.on_queued()
        return queued

    def release(self, series_uid: str, reason: str, flagged: bool) -> int:
        """Release a series to its routed destinations; returns deliveries queued."""
        destinations = self.destinations(series_uid)
        queued = self.journal.release_series(series_uid, destinations, reason, flagged=flagged)
        log.info(
            "series %s released (%s%s) to %s: %d deliveries queued",
            series_uid, reason, ", flagged" if flagged else "", ", ".join(destinations) or "nowhere",
            queued,
        )  # fmt: skip
        self.on_queued()
        return queued

    async def expire_holds(self, interval_s: float = 1.0) -> None:
        """Release, flagged, every series held longer than the hold timeout."""
        while True:
            cutoff = time.time() - self.cfg.hold_timeout_s
            for uid in await anyio.to_thread.run_sync(self.journal.held_before, cutoff):
                log.warning(
                    "series %s held past %.0f s: forwarding it flagged",
                    uid,
                    self.cfg.hold_timeout_s,
                )
                await anyio.to_thread.run_sync(self.release, uid, "hold-timeout", True)
                await self.announce(uid, SeriesState.RELEASED)
            await anyio.sleep(interval_s)
