"""Sections for what goes out to people: the MQTT broker and the alerts' patient data."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field, model_validator

from agent.config.fields import Strict


class MqttTLSConfig(Strict):
    """TLS to the broker; PEM files. Hostname checking is on unless turned off on purpose."""

    ca_file: Path | None = None  # None: the system's trust store
    cert_file: Path | None = None  # client certificate, for brokers that require one
    key_file: Path | None = None
    check_hostname: bool = True

    @model_validator(mode="after")
    def _cert_with_key(self) -> MqttTLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MqttConfig(Strict):
    """The broker. The password is never in this file or on the command line: it is read
    from ``password_file`` or from the environment variable named by ``password_env``."""

    url: str = Field(default="mqtt://127.0.0.1:1883", pattern=r"^mqtts?://")
    # levels of [A-Za-z0-9_.-] joined by single '/': no wildcard, NUL, control or non-ASCII
    # character, empty level or leading '$' (the broker's own topics) can reach a topic
    topic_prefix: str = Field(
        default="scanner-agent", max_length=128, pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"
    )
    tls: MqttTLSConfig | None = None  # mqtts:// without tls: uses the system's trust store
    username: str | None = Field(default=None, min_length=1, max_length=256)
    password_file: Path | None = None
    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    client_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    keepalive: int = Field(default=30, ge=5, le=3600)
    reconnect_max_s: float = Field(default=30.0, ge=0.5, le=600)  # backoff cap, jittered

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give password_file or password_env, not both")
        if (self.password_file or self.password_env) and self.username is None:
            raise ValueError("a password needs a username")
        return self


PatientField = Literal["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge"]


class AlertsConfig(Strict):
    """What patient data alerts and verdicts carry; see docs/alerts.md."""

    include_patient_data: bool = True  # False: not even the accession number
    patient_fields: list[PatientField] = []  # DICOM keywords, added on purpose
    feed_max_bytes: ByteSize = ByteSize(10 << 20)  # <storage>/feed.jsonl rotates past this

    @model_validator(mode="after")
    def _fields_need_switch(self) -> AlertsConfig:
        if self.patient_fields and not self.include_patient_data:
            raise ValueError("patient_fields needs include_patient_data: true")
        return self
