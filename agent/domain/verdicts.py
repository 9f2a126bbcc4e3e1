"""Alerts and verdicts: what the agent tells the technologist and the tools around it.

Small frozen dataclasses that follow the external contract in DESIGN.md; ``to_dict()`` and
``to_json()`` give the wire form. Times are kept as epoch seconds inside the agent and
written as ISO 8601 UTC (``2024-05-01T12:00:00.123Z``) on the wire.

Patient data: by default an alert or verdict names the exam (accession number), the series
(description, modality), the station and times, never the patient. :class:`PatientPolicy`
applies ``alerts.include_patient_data`` and ``alerts.patient_fields`` on the way out, so
whatever a stage puts in ``patient`` only leaves the agent when the site asked for it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

ALERT_SCHEMA = "scanner-agent.alert/1"
VERDICT_SCHEMA = "scanner-agent.verdict/1"

Kind = Literal["qc", "triage", "system", "worklist"]
Severity = Literal["info", "warning", "critical"]
Action = Literal["repeat", "review", "none"]
QCStatus = Literal["pass", "warn", "fail"]
Priority = Literal["stat", "urgent", "routine"]
TriageStatus = Literal["ok", "unavailable", "not_applicable"]
ModelMode = Literal["active", "shadow"]
Scalar = float | int | str | None


def iso_utc(epoch: float | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a Z, or None."""
    if epoch is None:
        return None
    stamp = datetime.fromtimestamp(epoch, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _empty() -> Mapping[str, str]:
    return {}


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a check flagged a series: ``value`` measured against ``threshold``."""

    code: str
    message: str
    value: Scalar = None
    threshold: Scalar = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "value": self.value,
            "threshold": self.threshold,
        }


@dataclass(frozen=True, slots=True)
class Alert:
    """A message for the technologist (``P/A/alerts``). ``id`` lets consumers drop the
    duplicates that at-least-once delivery can produce after an outage."""

    schema: ClassVar[str] = ALERT_SCHEMA

    kind: Kind
    severity: Severity
    action: Action
    study_uid: str
    series_uid: str
    modality: str = ""
    series_description: str = ""
    reasons: tuple[Reason, ...] = ()
    last_image_at: float | None = None
    accession_number: str | None = ""
    station_name: str = ""
    patient: Mapping[str, str] = field(default_factory=_empty)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: float = field(default_factory=time.time)

    def to_dict(self, published_at: float | None = None) -> dict[str, Any]:
        """The wire form; ``latency_ms`` runs from the last image to ``published_at``."""
        latency = None
        if self.last_image_at is not None and published_at is not None:
            latency = round((published_at - self.last_image_at) * 1000.0, 1)
        return {
            "schema": self.schema,
            "id": self.id,
            "created": iso_utc(self.created),
            "kind": self.kind,
            "severity": self.severity,
            "action": self.action,
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "modality": self.modality,
            "series_description": self.series_description,
            "accession_number": self.accession_number,
            "station_name": self.station_name,
            "patient": dict(self.patient),
            "reasons": [r.to_dict() for r in self.reasons],
            "last_image_at": iso_utc(self.last_image_at),
            "latency_ms": latency,
        }

    def to_json(self, published_at: float | None = None) -> str:
        return json.dumps(self.to_dict(published_at), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class QC:
    status: QCStatus
    reasons: tuple[Reason, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reasons": [r.to_dict() for r in self.reasons],
            "metrics": dict(self.metrics),
        }


@dataclass(frozen=True, slots=True)
class Finding:
    """One model label's series score; ``slices`` are the SOP instance UIDs that drove it."""

    label: str
    score: float
    priority: Priority = "routine"
    model: str = ""  # name@version
    slices: tuple[str, ...] = ()
    threshold: float | None = None  # the score at which this label becomes urgent
    mode: ModelMode = "active"  # shadow: recorded only; no alert, no effect on the priority

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": self.score,
            "priority": self.priority,
            "model": self.model,
            "threshold": self.threshold,
            "slices": list(self.slices),
            "mode": self.mode,
        }


@dataclass(frozen=True, slots=True)
class BodyPartCall:
    """The body-part classifier against the header: ``agrees`` None when either is empty."""

    header: str  # BodyPartExamined as received ("" when missing)
    predicted: str  # the classifier's answer ("" below its confidence floor)
    score: float
    agrees: bool | None
    model: str = ""

    @property
    def enriched(self) -> bool:
        """Whether the classifier adds to the header (missing) or contradicts it."""
        return bool(self.predicted) and self.agrees is not True

    def to_dict(self) -> dict[str, Any]:
        return {
            "header": self.header,
            "predicted": self.predicted,
            "score": self.score,
            "agrees": self.agrees,
            "enriched": self.enriched,
            "model": self.model,
        }


@dataclass(frozen=True, slots=True)
class Triage:
    """AI triage of a series. ``status`` is ``unavailable`` when a model that applied failed
    (``reasons`` say why); the priority is then only that of the findings that remain, so
    consumers must not read an unavailable triage as routine. ``not_applicable``: the series
    is not what the model was made for (a localizer, a tiny matrix, a chest labelled HEAD);
    it has no score, only the reason."""

    priority: Priority
    findings: tuple[Finding, ...] = ()
    status: TriageStatus = "ok"
    reasons: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    body_part: BodyPartCall | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "priority": self.priority,
            "status": self.status,
            "findings": [f.to_dict() for f in self.findings],
            "reasons": list(self.reasons),
            "models": list(self.models),
            "body_part": self.body_part.to_dict() if self.body_part else None,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The latest word on one series (``P/A/series/<uid>``, retained; ``inspect --json``)."""

    schema: ClassVar[str] = VERDICT_SCHEMA

    study_uid: str
    series_uid: str
    modality: str
    instances: int
    state: str  # receiving | complete | held | released | forwarded | quarantined
    qc: QC
    triage: Triage | None = None
    deliveries: Mapping[str, str] = field(default_factory=_empty)
    series_description: str = ""
    accession_number: str | None = ""
    station_name: str = ""
    superseded: bool = False  # the technologist asked for a repeat
    last_image_at: float | None = None
    patient: Mapping[str, str] = field(default_factory=_empty)
    created: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "created": iso_utc(self.created),
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "modality": self.modality,
            "series_description": self.series_description,
            "accession_number": self.accession_number,
            "station_name": self.station_name,
            "patient": dict(self.patient),
            "instances": self.instances,
            "state": self.state,
            "superseded": self.superseded,
            "qc": self.qc.to_dict(),
            "triage": self.triage.to_dict() if self.triage else None,
            "deliveries": dict(self.deliveries),
            "last_image_at": iso_utc(self.last_image_at),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


def alert_for(
    verdict: Verdict,
    kind: Kind,
    severity: Severity,
    action: Action,
    reasons: tuple[Reason, ...] = (),
) -> Alert:
    """An alert about ``verdict``'s series, carrying the same series context."""
    return Alert(
        kind=kind, severity=severity, action=action,
        study_uid=verdict.study_uid, series_uid=verdict.series_uid,
        modality=verdict.modality, series_description=verdict.series_description,
        reasons=reasons or verdict.qc.reasons, last_image_at=verdict.last_image_at,
        accession_number=verdict.accession_number, station_name=verdict.station_name,
        patient=verdict.patient,
    )  # fmt: skip


def system_alert(
    code: str,
    message: str,
    *,
    severity: Severity = "warning",
    series_uid: str = "",
    study_uid: str = "",
    value: Scalar = None,
    threshold: Scalar = None,
) -> Alert:
    """An alert about the agent itself (a refused command, a full spool, a lost peer)."""
    return Alert(
        kind="system", severity=severity, action="none",
        study_uid=study_uid, series_uid=series_uid,
        reasons=(Reason(code, message, value, threshold),),
    )  # fmt: skip
