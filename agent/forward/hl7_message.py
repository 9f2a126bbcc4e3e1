"""HL7 v2.5 ORU^R01 for one verdict, built and validated with hl7apy, and its ACK read back.

    MSH  sender and receiver from the destination, MSH-10 the message's stable id
    PID  PID-3 patient ID (^^^issuer), PID-5 name, PID-7 birth date, PID-8 sex
    OBR  OBR-3 the series UID, OBR-4 the agent's check, OBR-7 the last image's time,
         OBR-18 the accession number, OBR-24 the modality, OBR-25 F (or C, a later verdict)
    OBX  QC status (CE, abnormal flag A for fail), each QC reason (ST), the triage priority
         (CE), each active finding's score (NM), the study and series UIDs (ST, DCM codes)

Every value taken from a header goes through hl7apy's ST escaping, so delimiters in it stay
data; the message is validated against the v2.5 structure before it is sent.
"""

from __future__ import annotations

import time
from typing import Any

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message
from hl7apy.v2_5 import ST

from agent.config import Hl7Destination

STRICT = VALIDATION_LEVEL.STRICT
NULL = '""'  # HL7's explicit null, for a required field the header leaves empty
LOCAL = "99SCANAGT"  # the agent's private coding scheme
DCM = "DCM"
_QC_TEXT = {"pass": "QC passed", "warn": "QC warning", "fail": "QC failed"}
# ERR-3 codes (HL7 table 0357) that say the receiver will never take this kind of message
UNSUPPORTED = {"200", "201", "202", "203"}


class Hl7Error(Exception):
    pass


def esc(value: Any, limit: int = 199) -> str:
    """A value as HL7 text: one line, capped, delimiters escaped by hl7apy."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value or ""))[:limit]
    return str(ST(text).to_er7())


def hl7_time(epoch: float | None) -> str:
    when = time.gmtime(epoch if epoch is not None else time.time())
    return time.strftime("%Y%m%d%H%M%S", when) + "+0000"


def oru_r01(dest: Hl7Destination, body: dict[str, Any]) -> str:
    """The ER7 text of the verdict's ORU^R01; raises Hl7Error when it does not validate."""
    verdict, patient = body.get("verdict", {}), body.get("patient", {})
    try:
        msg = Message("ORU_R01", version="2.5", validation_level=STRICT)
        _msh(msg, dest, str(body.get("id", "")))
        result = msg.add_group("ORU_R01_PATIENT_RESULT")
        _pid(result.add_group("ORU_R01_PATIENT").add_segment("PID"), patient)
        order = result.add_group("ORU_R01_ORDER_OBSERVATION")
        _obr(order.add_segment("OBR"), verdict, body.get("study", {}), bool(body.get("correction")))
        for n, fields in enumerate(observations(verdict), start=1):
            _obx(order.add_group("ORU_R01_OBSERVATION").add_segment("OBX"), n, *fields)
        text = str(msg.to_er7())
        # read back the way a receiver reads it: strict parsing finds what building does not
        if not parse_message(text, validation_level=STRICT, find_groups=True).validate():
            raise Hl7Error("the ORU^R01 does not validate")
        return text
    except HL7apyException as exc:
        raise Hl7Error(f"cannot build the ORU^R01: {exc}") from exc


def _msh(msg: Any, dest: Hl7Destination, control_id: str) -> None:
    msg.msh.msh_3 = esc(dest.sending_application)
    msg.msh.msh_4 = esc(dest.sending_facility)
    msg.msh.msh_5 = esc(dest.receiving_application)
    msg.msh.msh_6 = esc(dest.receiving_facility)
    msg.msh.msh_7 = hl7_time(None)
    msg.msh.msh_9 = "ORU^R01^ORU_R01"
    msg.msh.msh_10 = esc(control_id, 20)
    msg.msh.msh_11 = "P"
    msg.msh.msh_12 = "2.5"
    msg.msh.msh_15 = "AL"  # accept acknowledgement: always


def _pid(pid: Any, patient: dict[str, str]) -> None:
    pid.pid_1 = "1"
    ident = esc(patient.get("PatientID"), 20) or NULL
    pid.pid_3 = f"{ident}^^^{esc(patient.get('IssuerOfPatientID'), 20)}"
    family, _, given = str(patient.get("PatientName", "")).partition("^")
    pid.pid_5 = f"{esc(family, 50) or NULL}^{esc(given.split('^')[0], 30)}"
    if birth := patient.get("PatientBirthDate", ""):
        pid.pid_7 = esc(birth[:8] if birth[:8].isdigit() else "", 8)
    if (sex := patient.get("PatientSex", "")) in ("M", "F", "O"):
        pid.pid_8 = sex


def _obr(obr: Any, verdict: dict[str, Any], study: dict[str, str], correction: bool) -> None:
    obr.obr_1 = "1"
    obr.obr_3 = esc(verdict.get("series_uid"), 64)
    obr.obr_4 = f"QCTRIAGE^Image QC and AI triage^{LOCAL}"
    obr.obr_7 = _dicom_time(verdict.get("last_image_at"))
    obr.obr_18 = esc(study.get("AccessionNumber"), 16)
    obr.obr_22 = hl7_time(None)
    obr.obr_24 = esc(_section(str(verdict.get("modality", ""))), 10)
    obr.obr_25 = "C" if correction else "F"


def _section(modality: str) -> str:
    """HL7 table 0074 diagnostic service section for the modality."""
    return {"CT": "CT", "MR": "MR", "US": "US", "NM": "NMR"}.get(modality.upper(), "RAD")


def _dicom_time(iso: Any) -> str:
    digits = "".join(ch for ch in str(iso or "") if ch.isdigit())[:14]
    return digits + "+0000" if len(digits) == 14 else hl7_time(None)  # the verdict's is UTC


Obx = tuple[str, str, str, str]  # value type, observation id (CE), value (escaped), flag


def observations(verdict: dict[str, Any]) -> list[Obx]:
    qc = verdict.get("qc") or {}
    status = str(qc.get("status", ""))
    out: list[Obx] = [
        ("CE", f"QC-STATUS^QC status^{LOCAL}",
         f"{esc(status, 8)}^{esc(_QC_TEXT.get(status, status))}^{LOCAL}",
         "A" if status == "fail" else ""),
    ]  # fmt: skip
    for reason in qc.get("reasons") or []:
        out.append(("ST", f"QC-REASON^QC reason^{LOCAL}", esc(_reason(reason)), ""))
    triage = verdict.get("triage")
    if triage:
        priority = str(triage.get("priority", "routine"))
        out.append(("CE", f"TRIAGE-PRIORITY^Triage priority^{LOCAL}",
                    f"{esc(priority, 8)}^{esc(priority.title())}^{LOCAL}",
                    "" if priority == "routine" else "A"))  # fmt: skip
        for f in triage.get("findings") or []:
            if f.get("mode", "active") != "active":
                continue
            label = esc(f.get("label"), 60)
            out.append(("NM", f"{label}^{label} score^{LOCAL}", f"{float(f.get('score', 0)):.4f}",
                        "" if f.get("priority", "routine") == "routine" else "A"))  # fmt: skip
    out.append(("ST", f"110180^Study Instance UID^{DCM}", esc(verdict.get("study_uid"), 64), ""))
    out.append(("ST", f"112002^Series Instance UID^{DCM}", esc(verdict.get("series_uid"), 64), ""))
    return out


def _reason(reason: Any) -> str:
    if not isinstance(reason, dict):
        return str(reason)
    return f"{reason.get('code', '')}: {reason.get('message', '')}"


def _obx(obx: Any, n: int, value_type: str, ident: str, value: str, flag: str) -> None:
    obx.obx_1 = str(n)
    obx.obx_2 = value_type
    obx.obx_3 = ident
    obx.obx_5 = value
    if flag:
        obx.obx_8 = flag
    obx.obx_11 = "F"


def read_ack(text: str, control_id: str) -> tuple[str, str, str]:
    """(MSA-1 code, ERR-3 code, why) of an ACK to ``control_id``; Hl7Error when not one."""
    try:
        ack = parse_message(text, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
        code = str(ack.msa.msa_1.value)
        answered = str(ack.msa.msa_2.value)
        err = ack.err.err_3.to_er7() if ack.children.get("ERR") else ""
    except (HL7apyException, AttributeError, IndexError) as exc:
        raise Hl7Error(f"the answer is not an HL7 ACK: {exc}") from exc
    if answered != control_id:
        raise Hl7Error(f"the ACK answers message {answered[:20]!r}, not {control_id!r}")
    why = "; ".join(p for p in (str(ack.msa.msa_3.value or ""), str(err)) if p)
    return code, str(err).split("^", 1)[0], "".join(ch for ch in why if ch.isprintable())[:200]
