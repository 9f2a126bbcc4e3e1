"""Sample verdicts and alerts, a journal seeded with series, and agent configs for the
alert tests (the notifier alone, without the DICOM side)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.domain.instances import Instance, SeriesInfo
from agent.domain.verdicts import QC, Alert, Finding, Reason, Triage, Verdict, alert_for
from agent.journal.database import Journal

STUDY = "1.2.826.0.1.3680043.8.498.1"


def series_uid(n: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.1.{n}"


def agent_config(storage: Path, mqtt: dict[str, Any] | None = None, **extra: Any) -> AgentConfig:
    doc: dict[str, Any] = {"agent_id": "ct-1", "storage": {"path": str(storage)}, **extra}
    if mqtt is not None:
        doc["mqtt"] = {"reconnect_max_s": 1.0, "keepalive": 5, **mqtt}
    doc.setdefault("forward", {"destinations": [{"kind": "folder", "name": "local"}]})
    return AgentConfig.model_validate(doc)


def seed_series(storage: Path, *uids: str, study: str = STUDY) -> None:
    """Series rows (one instance each) in the journal, marked complete."""
    storage.mkdir(parents=True, exist_ok=True)
    journal = Journal.open(storage / "journal.sqlite")
    try:
        for i, uid in enumerate(uids):
            now = time.time()
            info = SeriesInfo(uid, study, "CT", f"Head {i}", accession_number="ACC1")
            inst = Instance(f"{uid}.1", "1.2.840.10008.5.1.4.1.1.2", uid, study,
                            "1.2.840.10008.1.2.1", f"/nonexistent/{i}.dcm", 10, f"{i:064x}", 1,
                            modality="CT", received_at=now)  # fmt: skip
            journal.record_instance(inst, info)
            journal.mark_complete(uid, "count", now)
    finally:
        journal.close()


def verdict(uid: str, *, status: str = "fail", state: str = "held", **kw: Any) -> Verdict:
    reasons = (Reason("ct.motion", "motion streaks in 12 of 40 slices", 0.31, 0.2),)
    kw.setdefault("series_description", "Head 5mm")
    return Verdict(
        study_uid=STUDY, series_uid=uid, modality="CT", instances=40, state=state,
        qc=QC(status, reasons if status != "pass" else (), {"noise_hu": 11.5}),  # type: ignore[arg-type]
        triage=Triage("urgent", (Finding("hemorrhage", 0.82),)),
        deliveries={"local": "queued"},
        accession_number="ACC1", station_name="CT01",
        patient={"PatientName": "Doe^Jane", "PatientID": "P123"},
        last_image_at=time.time() - 0.05, **kw,
    )  # fmt: skip


def repeat_alert(v: Verdict) -> Alert:
    return alert_for(v, "qc", "critical", "repeat")
