"""The MQTT contract against a real Mosquitto: retained online status, an alert, the
retained verdict, and offline through the last will when the publisher is killed -9."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest

from tests.support.alert_samples import series_uid
from tests.support.broker import Mosquitto, Received, subscriber, unique_prefix

pytestmark = pytest.mark.anyio
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")



def status_is(base: str, state: str) -> Any:
    def check(messages: list[Received]) -> bool:
        return any(m.topic == f"{base}/status" and m.json()["state"] == state for m in messages)

    return check


async def test_online_alert_retained_verdict_and_last_will(
    mosquitto: Mosquitto, runner_factory: Any
) -> None:
    prefix = unique_prefix()
    base = f"{prefix}/ct-1"
    runner = runner_factory({"url": mosquitto.url, "topic_prefix": prefix})
    uid = series_uid(1)
    async with subscriber(mosquitto.port, f"{base}/#") as sub:
        await sub.wait_for(status_is(base, "online"))
        runner.send({"verdict": uid})
        await sub.wait_for(lambda ms: sub.on("/alerts") and sub.on(f"/series/{uid}"))
    alert = sub.on("/alerts")[0].json()
    check_alert(alert, uid)
    check_verdict(sub.on(f"/series/{uid}")[0].json(), uid)

    async with subscriber(mosquitto.port, f"{base}/#") as late:  # what a console sees later
        await late.wait_for(lambda ms: late.on("/status") and late.on(f"/series/{uid}"))
        assert late.on("/status")[0].retain and late.on("/status")[0].json()["state"] == "online"
        assert late.on(f"/series/{uid}")[0].retain
        assert not late.on("/alerts"), "alerts are events, not retained"
        runner.kill9()
        await late.wait_for(status_is(base, "offline"))
    offline = next(m for m in late.on("/status") if m.json()["state"] == "offline").json()
    assert offline["reason"] == "connection lost" and offline["agent_id"] == "ct-1"


def check_alert(alert: dict[str, Any], uid: str) -> None:
    assert alert["schema"] == "scanner-agent.alert/1"
    assert uuid.UUID(alert["id"]).version == 4
    assert ISO_Z.match(alert["created"]) and ISO_Z.match(alert["last_image_at"])
    assert (alert["kind"], alert["severity"], alert["action"]) == ("qc", "critical", "repeat")
    assert alert["study_uid"] and alert["series_uid"] == uid and alert["modality"] == "CT"
    assert alert["series_description"] == "Head 5mm"
    assert alert["reasons"] == [{"code": "ct.motion", "message": "motion streaks in 12 of 40 slices",
                                 "value": 0.31, "threshold": 0.2}]  # fmt: skip
    assert isinstance(alert["latency_ms"], float) and 0 < alert["latency_ms"] < 60_000
    assert alert["accession_number"] == "ACC1" and alert["station_name"] == "CT01"
    assert alert["patient"] == {}, "no patient name or ID unless the site asks for them"
    assert "Doe" not in json.dumps(alert)


def check_verdict(verdict: dict[str, Any], uid: str) -> None:
    assert verdict["schema"] == "scanner-agent.verdict/1"
    assert verdict["series_uid"] == uid and verdict["instances"] == 40
    assert verdict["state"] == "held" and verdict["modality"] == "CT"
    assert verdict["qc"]["status"] == "fail" and verdict["qc"]["metrics"] == {"noise_hu": 11.5}
    triage = verdict["triage"]  # the contract's keys; triage adds status, models, body_part, ...
    assert triage["priority"] == "urgent" and triage["status"] == "ok"
    assert [{k: f[k] for k in ("label", "score")} for f in triage["findings"]] == [
        {"label": "hemorrhage", "score": 0.82}]  # fmt: skip
    assert verdict["deliveries"] == {"local": "queued"}
    assert verdict["patient"] == {} and "P123" not in json.dumps(verdict)


async def test_patient_fields_are_added_only_when_configured(
    mosquitto: Mosquitto, runner_factory: Any
) -> None:
    prefix = unique_prefix()
    base = f"{prefix}/ct-1"
    runner_factory({"url": mosquitto.url, "topic_prefix": prefix},
                   alerts={"patient_fields": ["PatientName"]}).send({"verdict": series_uid(2)})  # fmt: skip
    async with subscriber(mosquitto.port, f"{base}/series/#") as sub:
        await sub.wait_for(lambda ms: ms)
    assert sub.messages[0].json()["patient"] == {"PatientName": "Doe^Jane"}
    prefix2 = unique_prefix()
    runner_factory({"url": mosquitto.url, "topic_prefix": prefix2},
                   alerts={"include_patient_data": False}).send({"verdict": series_uid(3)})  # fmt: skip
    async with subscriber(mosquitto.port, f"{prefix2}/ct-1/series/#") as sub2:
        await sub2.wait_for(lambda ms: ms)
    doc = sub2.messages[0].json()
    assert doc["patient"] == {} and doc["accession_number"] is None
