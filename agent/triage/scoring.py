"""From slice scores to a series' triage: aggregation, priorities, the body-part call, and the
technologist's alert. Pure functions over the models' manifests; no ONNX Runtime here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from agent.domain.verdicts import (
    Alert,
    BodyPartCall,
    Finding,
    ModelMode,
    Priority,
    Reason,
    Severity,
    Triage,
    TriageStatus,
    Verdict,
    alert_for,
)
from agent.triage.models import Aggregation, Model

F32 = NDArray[np.float32]
BODY_PART_SYNONYMS = {
    "HEAD": {"HEAD", "BRAIN", "SKULL", "HEADNECK", "CRANIUM"},
    "CHEST": {"CHEST", "THORAX", "LUNG", "HEART", "CHESTABDOMEN"},
    "ABDOMEN": {"ABDOMEN", "LIVER", "PANCREAS", "KIDNEY", "ABDOMENPELVIS", "CHESTABDOMEN"},
    "PELVIS": {"PELVIS", "HIP", "ABDOMENPELVIS", "BLADDER", "PROSTATE"},
}


@dataclass(frozen=True)
class SliceScores:
    """One model's output for one image (frame): ``scores[label_index]``."""

    sop_instance_uid: str
    scores: F32
    frame: int = 0


def aggregate(values: F32, how: Aggregation) -> tuple[float, NDArray[np.intp]]:
    """The series score of one label and the indices of the slices that drove it."""
    order = np.argsort(-values, kind="stable")
    if how.method == "mean":
        return float(values.mean()), order[: how.k]
    top = order[: 1 if how.method == "max" else min(how.k, len(values))]
    return length_adjusted(float(values[top].mean()), len(values), how), top


def length_adjusted(score: float, slices: int, how: Aggregation) -> float:
    """``score`` less ``length_slope * ln(slices / length_reference)`` in logit, for a series
    longer than the reference (see :class:`agent.triage.models.Aggregation`)."""
    ref = how.length_reference
    if ref is None or slices <= ref or how.length_slope == 0.0:
        return score
    p = min(max(score, 1e-7), 1.0 - 1e-7)
    logit = math.log(p / (1.0 - p)) - how.length_slope * math.log(slices / ref)
    return 1.0 / (1.0 + math.exp(-logit))


def priority_of(score: float, stat: float, urgent: float) -> Priority:
    return "stat" if score >= stat else "urgent" if score >= urgent else "routine"


def series_triage(
    model: Model, slice_scores: Sequence[SliceScores], mode: ModelMode = "active"
) -> Triage:
    """Aggregate one triage model's slice scores into findings with their priority (what it
    would be: a shadow model's findings carry it too, but :func:`priority_for` ignores them)."""
    man = model.manifest
    tag = model.tag
    if not slice_scores:
        return unavailable([tag], f"{man.name}: no slice was scored")
    table = np.stack([s.scores for s in slice_scores])
    findings = []
    for j, label in enumerate(man.outputs.labels):
        if label not in man.thresholds:
            continue
        score, idx = aggregate(table[:, j], man.aggregation)
        th = man.thresholds[label]
        slices = tuple(dict.fromkeys(slice_scores[int(i)].sop_instance_uid for i in idx))
        findings.append(Finding(label, round(score, 4), priority_of(score, th.stat, th.urgent),
                                model=tag, slices=slices, threshold=th.urgent,
                                mode=mode))  # fmt: skip
    triage = Triage(priority="routine", findings=tuple(findings), models=(tag,))
    return Triage(priority_for(triage), triage.findings, models=(tag,))


def body_part_call(model: Model, slice_scores: Sequence[SliceScores], header: str) -> BodyPartCall:
    """The body-part model's answer for the series, against the header's BodyPartExamined."""
    labels = model.manifest.outputs.labels
    mean = np.stack([s.scores for s in slice_scores]).mean(axis=0)
    best = int(np.argmax(mean))
    confident = float(mean[best]) >= model.manifest.min_confidence
    predicted = labels[best] if confident else ""
    head = header.strip().upper()
    agrees = (
        None
        if not head or not predicted
        else head in BODY_PART_SYNONYMS.get(predicted, {predicted})
    )
    return BodyPartCall(header=head, predicted=predicted, score=round(float(mean[best]), 4),
                        agrees=agrees, model=model.tag)  # fmt: skip


def unavailable(models: Sequence[str], reason: str) -> Triage:
    return Triage(priority="routine", status="unavailable", reasons=(reason,), models=tuple(models))


def not_applicable(models: Sequence[str], reason: str) -> Triage:
    return Triage(priority="routine", status="not_applicable", reasons=(reason,),
                  models=tuple(models))  # fmt: skip


_RANK = {"routine": 0, "urgent": 1, "stat": 2}


def priority_for(triage: Triage | None) -> Priority:
    """The highest priority among the active findings; routine without any."""
    best: Priority = "routine"
    for f in triage.findings if triage else ():
        if f.mode == "active" and _RANK[f.priority] > _RANK[best]:
            best = f.priority
    return best


def severity_for(priority: Priority) -> Severity:
    """Alert severity for a triage priority: stat is critical, urgent a warning."""
    return {"stat": "critical", "urgent": "warning", "routine": "info"}[priority]  # type: ignore[return-value]


def triage_alert(verdict: Verdict) -> Alert | None:
    """The technologist's alert for a verdict's triage: critical for stat, a warning for
    urgent or for triage that was unavailable; None when there is nothing to say. Shadow
    findings never alert."""
    triage = verdict.triage
    if triage is None:
        return None
    flagged = [f for f in triage.findings if f.priority != "routine" and f.mode == "active"]
    reasons = tuple(
        Reason(f"triage.{f.label}", f"{f.label}: score {f.score:.2f} ({f.priority}, {f.model})",
               f.score, f.threshold)
        for f in flagged
    )  # fmt: skip
    if triage.status == "unavailable":
        reasons += tuple(Reason("triage.unavailable", r) for r in triage.reasons)
    if not reasons:
        return None
    priority = priority_for(triage)
    severity = severity_for(priority) if flagged else "warning"
    return alert_for(verdict, "triage", severity, "review" if flagged else "none", reasons)


def combine(parts: Sequence[Triage], body_part: BodyPartCall | None) -> Triage:
    findings = tuple(f for p in parts for f in p.findings)
    reasons = tuple(r for p in parts for r in p.reasons)
    models = tuple(m for p in parts for m in p.models)
    status: TriageStatus = "ok"
    if any(p.status == "unavailable" for p in parts):
        status = "unavailable"
    elif parts and all(p.status == "not_applicable" for p in parts):
        status = "not_applicable"
    draft = Triage("routine", findings, status=status, reasons=reasons, models=models,
                   body_part=body_part)  # fmt: skip
    return Triage(priority_for(draft), findings, status=status, reasons=reasons, models=models,
                  body_part=body_part)  # fmt: skip
