"""The MLLP sender against a real listener: hostile header values stay data, and each
acknowledgement code means what HL7 says it means."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from agent.config import Hl7Destination
from agent.forward.hl7_sender import Hl7Sender
from agent.forward.outcome import Kind
from agent.journal.message_queue import MessageItem
from tests.support.mllp import MllpListener

HOSTILE = "Evil|Name^Given~Rep\\Esc&Sub\rMSH|^~\\&|INJECTED"


def item(**patient: str) -> MessageItem:
    body = {
        "id": "msg0001",
        "verdict": {"series_uid": "1.2.3.4", "study_uid": "1.2.3", "modality": "CT",
                    "qc": {"status": "fail", "reasons": [{"code": "qc.motion", "message": HOSTILE}]},
                    "triage": {"priority": "stat", "findings": [
                        {"label": "hemorrhage", "score": 0.97, "priority": "stat"},
                        {"label": "shadowed", "score": 0.5, "mode": "shadow"}]}},
        "patient": {"PatientID": "ID|1", **patient},
        "study": {"AccessionNumber": "ACC^1"},
    }  # fmt: skip
    return MessageItem(1, "ris", "", "", "verdict message 1", "", "1.2.3.4", "1.2.3", "stat",
                       body=json.dumps(body))  # fmt: skip


@pytest.fixture
def listener(request: pytest.FixtureRequest) -> Iterator[MllpListener]:
    answer, code = getattr(request, "param", ("AA", ""))
    peer = MllpListener(answer=answer, error_code=code).start()
    yield peer
    peer.stop()


def sender(listener: MllpListener) -> Hl7Sender:
    return Hl7Sender(Hl7Destination(kind="hl7", name="ris", host="127.0.0.1", port=listener.port,
                                    timeout_s=5))  # fmt: skip


def send(listener: MllpListener, **patient: str) -> Any:
    s = sender(listener)
    try:
        return s.send([item(**patient)])
    finally:
        s.close()


def test_hostile_values_arrive_as_data(listener: MllpListener) -> None:
    result = send(listener, PatientName=HOSTILE)
    assert [o.kind for _, o in result.done] == [Kind.DELIVERED]
    (oru,) = listener.messages()
    assert not listener.received.invalid
    assert len(oru.children) == 2  # MSH and the one PATIENT_RESULT group: nothing injected
    pid = oru.oru_r01_patient_result.oru_r01_patient.pid
    # the delimiters came through escaped, as data: no field, component or segment split
    assert pid.pid_3.cx_1.to_er7() == "ID\\F\\1"
    assert pid.pid_5.xpn_1.to_er7() == "Evil\\F\\Name"
    assert pid.pid_5.xpn_2.to_er7() == "Given\\R\\Rep\\E\\Esc\\T\\Sub MSH\\F\\"
    (raw,) = listener.received.raw
    assert raw.count("\rMSH") == 0 and raw.count("\rPID") == 1
    observations = oru.oru_r01_patient_result.oru_r01_order_observation.oru_r01_observation
    by_code = {o.obx.obx_3.ce_1.value: o.obx for o in observations}
    assert by_code["QC-STATUS"].obx_8.to_er7() == "A"
    assert by_code["TRIAGE-PRIORITY"].obx_5.to_er7().startswith("stat^")
    assert by_code["hemorrhage"].obx_5.to_er7() == "0.9700"
    assert "shadowed" not in by_code  # shadow-mode findings are recorded only
    reason = by_code["QC-REASON"].obx_5.to_er7()
    assert "\\F\\" in reason and "\r" not in reason


@pytest.mark.parametrize("listener", [("AE", "")], indirect=True)
def test_application_error_quarantines(listener: MllpListener) -> None:
    (done,) = send(listener).done
    assert done[1].kind == Kind.QUARANTINED and done[1].message.startswith("ACK AE")
    assert len(listener.messages()) == 1 and not listener.received.invalid  # valid, refused


@pytest.mark.parametrize("listener", [("AR", "200")], indirect=True)
def test_reject_for_an_unsupported_message_quarantines(listener: MllpListener) -> None:
    (done,) = send(listener).done
    assert done[1].kind == Kind.QUARANTINED and "200" in done[1].message


@pytest.mark.parametrize("listener", [("AR", "207")], indirect=True)
def test_reject_for_other_reasons_is_retried(listener: MllpListener) -> None:
    result = send(listener)
    assert not result.done and result.retry is not None
    assert result.retry.reason.startswith("ACK AR")


def test_no_listener_is_retried(listener: MllpListener) -> None:
    listener.stop()
    result = send(listener)
    assert not result.done and result.retry is not None
