"""Config keys of mqtt/alerts, the outbox's ordering and coalescing, clear_verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.alerts.outbox import Outbox
from agent.config import parse_config
from agent.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mqtt: {password: x}", "mqtt.password: unknown key"),
        ("mqtt: {password_env: X}", "mqtt: a password needs a username"),
        ("mqtt: {username: u, password_env: X, password_file: /f}", "mqtt: give password_file or"),
        ("mqtt: {tls: {cert_file: /c}}", "mqtt.tls: cert_file and key_file must be given together"),
        ("mqtt: {tls: {verify: false}}", "mqtt.tls.verify: unknown key"),
        ("mqtt: {keepalive: 1}", "mqtt.keepalive:"),
        ("alerts: {patient_fields: [PatientWeight]}", "alerts.patient_fields[0]:"),
        ("alerts: {include_patient_data: false, patient_fields: [PatientID]}",
         "alerts: patient_fields needs include_patient_data: true"),
    ],
)
def test_mqtt_and_alerts_errors_name_the_yaml_path(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


def test_full_mqtt_config_is_accepted() -> None:
    cfg = parse_config(
        "mqtt: {url: 'mqtts://b:8883', username: u, password_file: /run/pw, client_id: c1,"
        " tls: {ca_file: /ca, cert_file: /c, key_file: /k}}\nalerts: {patient_fields: [PatientName]}"
    )
    assert cfg.mqtt is not None and cfg.mqtt.tls is not None and cfg.mqtt.tls.check_hostname
    assert cfg.alerts.patient_fields == ["PatientName"]


def test_outbox_keeps_order_coalesces_verdicts_and_clears(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "journal.sqlite")
    box.put(verdict=("1.1", '{"v":1}'), alert=('{"a":1}', 1.0))
    box.put(alert=('{"a":2}', None))
    box.put(verdict=("1.1", '{"v":2}'))  # replaces the waiting verdict of 1.1
    rows = box.pending()
    assert [(r.kind, r.payload) for r in rows] == [("alert", '{"a":1}'), ("alert", '{"a":2}'),
                                                   ("verdict", '{"v":2}')]  # fmt: skip
    assert rows[2].topic == "series/1.1" and rows[2].retain
    box.ack([r.seq for r in rows[:2]])
    box.clear_verdict("1.1")
    (clear,) = box.pending()
    assert (clear.kind, clear.payload, clear.retain) == ("clear", "", True)
    assert box.latest_verdict("1.1") is None
    box.close()
    assert Outbox.open(tmp_path / "journal.sqlite").backlog() == 1  # durable
