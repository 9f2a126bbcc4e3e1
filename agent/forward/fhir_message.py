"""FHIR R4 for one verdict: a transaction Bundle built and validated with fhir.resources.

    ImagingStudy      conditional create on its Study Instance UID (urn:dicom:uid), with the
                      accession number (ACSN) and the series
    Observation (n)   the QC status, each QC reason, the triage priority, each active
                      finding's score; each derived from the ImagingStudy
    DiagnosticReport  category RAD, code LOINC 18748-4, status final (amended for a later
                      verdict), imagingStudy and result referencing the entries above

The subject is a logical reference by the patient ID (and its issuer), so the EHR links the
report to the patient it already knows. The models are fhir.resources' R4B package, whose
ImagingStudy, Observation, DiagnosticReport and Bundle are R4's on the wire.
"""

from __future__ import annotations

import uuid
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

LOCAL = "urn:scanner-agent:codes"  # the agent's private code system
DICOM_UID = "urn:dicom:uid"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
LOINC = "http://loinc.org"
PATIENT_ID = "urn:scanner-agent:patient-id"  # the identifier system when the header names none


class FhirError(Exception):
    pass


def _code(system: str, code: str, display: str = "") -> dict[str, Any]:
    coding = {"system": system, "code": code, **({"display": display} if display else {})}
    return {"coding": [coding], "text": display or code}


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def transaction(body: dict[str, Any]) -> dict[str, Any]:
    """The Bundle as JSON-ready dict; FhirError when fhir.resources refuses it."""
    verdict, study = body.get("verdict", {}), body.get("study", {})
    subject = _subject(body.get("patient", {}))
    study_url = _urn()
    entries = [_imaging_study(study_url, verdict, study, subject)]
    results = [_observation(o, subject, study_url) for o in observations(verdict)]
    entries += results
    entries.append(_report(body, subject, study_url, [e["fullUrl"] for e in results]))
    doc = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    try:
        return Bundle.model_validate(doc).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:
        raise FhirError(f"the FHIR Bundle does not validate: {exc.error_count()} error(s): "
                        f"{exc.errors()[0]['msg'][:200]}") from exc  # fmt: skip


def _subject(patient: dict[str, str]) -> dict[str, Any]:
    ident = {
        "system": _issuer(patient.get("IssuerOfPatientID", "")),
        "value": patient.get("PatientID") or "unknown",
    }
    name = str(patient.get("PatientName", "")).replace("^", " ").strip()
    return {"identifier": ident, **({"display": name} if name else {})}


def _issuer(issuer: str) -> str:
    return (
        f"urn:scanner-agent:issuer:{uuid.uuid5(uuid.NAMESPACE_URL, issuer)}"
        if issuer
        else PATIENT_ID
    )


def _imaging_study(
    url: str, verdict: dict[str, Any], study: dict[str, str], subject: dict[str, Any]
) -> dict[str, Any]:
    study_uid = str(verdict.get("study_uid", ""))
    identifiers: list[dict[str, Any]] = [{"system": DICOM_UID, "value": f"urn:oid:{study_uid}"}]
    if acc := study.get("AccessionNumber"):
        identifiers.append({"type": _code(V2_0203, "ACSN"), "value": acc})
    series = {
        "uid": str(verdict.get("series_uid", "")),
        "modality": {"system": DCM, "code": str(verdict.get("modality") or "OT")},
        "numberOfInstances": int(verdict.get("instances") or 0),
    }
    resource = {"resourceType": "ImagingStudy", "status": "available", "identifier": identifiers,
                "subject": subject, "series": [series]}  # fmt: skip
    return {
        "fullUrl": url, "resource": resource,
        "request": {"method": "POST", "url": "ImagingStudy",
                    "ifNoneExist": f"identifier={DICOM_UID}|urn:oid:{study_uid}"},
    }  # fmt: skip


Obs = tuple[dict[str, Any], dict[str, Any], bool]  # code, value[x], abnormal


def observations(verdict: dict[str, Any]) -> list[Obs]:
    qc = verdict.get("qc") or {}
    status = str(qc.get("status", "unknown"))
    out: list[Obs] = [(_code(LOCAL, "qc-status", "QC status"),
                       {"valueCodeableConcept": _code(LOCAL, f"qc-{status}", f"QC {status}")},
                       status == "fail")]  # fmt: skip
    for r in qc.get("reasons") or []:
        text = f"{r.get('code', '')}: {r.get('message', '')}" if isinstance(r, dict) else str(r)
        out.append((_code(LOCAL, "qc-reason", "QC reason"), {"valueString": text[:1000]}, False))
    triage = verdict.get("triage")
    if triage:
        priority = str(triage.get("priority", "routine"))
        out.append((_code(LOCAL, "triage-priority", "Triage priority"),
                     {"valueCodeableConcept": _code(LOCAL, priority, priority.title())},
                     priority != "routine"))  # fmt: skip
        for f in triage.get("findings") or []:
            if f.get("mode", "active") == "active":
                label = str(f.get("label", ""))[:64]
                out.append((_code(LOCAL, f"finding-{label}", f"{label} score"),
                            {"valueQuantity": {"value": round(float(f.get("score", 0)), 4),
                                               "unit": "score", "system": "http://unitsofmeasure.org",
                                               "code": "1"}},
                            f.get("priority", "routine") != "routine"))  # fmt: skip
    return out


def _observation(obs: Obs, subject: dict[str, Any], study_url: str) -> dict[str, Any]:
    code, value, abnormal = obs
    resource: dict[str, Any] = {
        "resourceType": "Observation", "status": "final", "code": code, "subject": subject,
        "category": [_code("http://terminology.hl7.org/CodeSystem/observation-category", "imaging")],
        "derivedFrom": [{"reference": study_url}], **value,
    }  # fmt: skip
    if abnormal:
        resource["interpretation"] = [_code(INTERPRETATION, "A", "Abnormal")]
    return {
        "fullUrl": _urn(),
        "resource": resource,
        "request": {"method": "POST", "url": "Observation"},
    }


def _report(
    body: dict[str, Any], subject: dict[str, Any], study_url: str, results: list[str]
) -> dict[str, Any]:
    verdict = body.get("verdict", {})
    resource = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": "urn:scanner-agent:verdict", "value": str(body.get("id", ""))}],
        "status": "amended" if body.get("correction") else "final",
        "category": [_code(V2_0074, "RAD", "Radiology")],
        "code": _code(LOINC, "18748-4", "Diagnostic imaging study"),
        "subject": subject,
        "issued": verdict.get("created"),
        "imagingStudy": [{"reference": study_url}],
        "result": [{"reference": url} for url in results],
        "conclusion": _conclusion(verdict),
    }
    if when := verdict.get("last_image_at"):
        resource["effectiveDateTime"] = when
    return {
        "fullUrl": _urn(),
        "resource": resource,
        "request": {"method": "POST", "url": "DiagnosticReport"},
    }


def _conclusion(verdict: dict[str, Any]) -> str:
    qc = (verdict.get("qc") or {}).get("status", "unknown")
    triage = verdict.get("triage")
    priority = f", triage {triage.get('priority', 'routine')}" if triage else ""
    return f"Image QC {qc}{priority} (scanner-agent, not a diagnosis)"
