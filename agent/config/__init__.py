"""Typed configuration, loaded from one YAML file: the root model and its loaders here, each
section in the module named for its job (receiving, forward, alerting, services).

Every model forbids unknown keys, so a typo is an error rather than a silently
ignored setting. :func:`load_config` raises :class:`ConfigError`, whose
``problems`` name each error by its YAML path (``dicom.port``) with a plain reason.

The ground: imports nothing from the agent but ``errors``.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from pydantic import field_validator

from agent.config.alerting import AlertsConfig, MqttConfig, MqttTLSConfig, PatientField
from agent.config.deidentify import DeidentifyConfig, SaltError, read_salt
from agent.config.fields import AETitle, Host, Port, Seconds, Strict, repeated
from agent.config.forward import (
    MESSAGE_KINDS,
    Destination,
    DimseDestination,
    FhirDestination,
    FolderDestination,
    ForwardConfig,
    Hl7Destination,
    RetryConfig,
    Route,
    RouteWhen,
    StowDestination,
)
from agent.config.mpps import MppsConfig, MppsPeer, WorklistConfig
from agent.config.receiving import DicomConfig, MrdConfig, SeriesConfig, StorageConfig, TLSConfig
from agent.config.services import (
    ComputeConfig,
    LoggingConfig,
    MetricsConfig,
    ModelSetting,
    QCConfig,
    TriageConfig,
)
from agent.config.web import WebConfig, WebTLSConfig
from agent.config.yaml_model import describe, parse_yaml_model
from agent.errors import ConfigError

__all__ = [
    "MESSAGE_KINDS",
    "AETitle",
    "AgentConfig",
    "AlertsConfig",
    "ComputeConfig",
    "ConfigError",
    "DeidentifyConfig",
    "Destination",
    "DicomConfig",
    "DimseDestination",
    "FhirDestination",
    "FolderDestination",
    "ForwardConfig",
    "Hl7Destination",
    "Host",
    "LoggingConfig",
    "MetricsConfig",
    "ModelSetting",
    "MppsConfig",
    "MppsPeer",
    "MqttConfig",
    "MqttTLSConfig",
    "MrdConfig",
    "PatientField",
    "Port",
    "QCConfig",
    "RetryConfig",
    "Route",
    "RouteWhen",
    "SaltError",
    "Seconds",
    "SeriesConfig",
    "StorageConfig",
    "StowDestination",
    "Strict",
    "TLSConfig",
    "TriageConfig",
    "WebConfig",
    "WebTLSConfig",
    "WorklistConfig",
    "default_storage_path",
    "describe",
    "embedded_default_text",
    "load_config",
    "parse_config",
    "parse_yaml_model",
    "read_salt",
    "repeated",
]

_AGENT_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")


class AgentConfig(Strict):
    agent_id: str = "edge-1"
    storage: StorageConfig = StorageConfig()
    dicom: DicomConfig = DicomConfig()
    series: SeriesConfig = SeriesConfig()
    forward: ForwardConfig = ForwardConfig()
    mqtt: MqttConfig | None = None  # omitted: alerts go to the log and the local feed
    mrd: MrdConfig | None = None  # omitted: no raw-data listener
    metrics: MetricsConfig | None = None  # omitted: no /metrics endpoint
    web: WebConfig | None = None  # omitted: no web console
    alerts: AlertsConfig = AlertsConfig()
    compute: ComputeConfig = ComputeConfig()
    triage: TriageConfig = TriageConfig()
    logging: LoggingConfig = LoggingConfig()
    qc: QCConfig = QCConfig()
    mpps: MppsConfig = MppsConfig()  # the MPPS SCP is always on; forward_to: [] keeps MPPS here
    worklist: WorklistConfig | None = None  # omitted: no worklist check before forwarding

    @field_validator("agent_id")
    @classmethod
    def _agent_id(cls, value: str) -> str:
        if not _AGENT_ID_RE.match(value):
            raise ValueError("must be 1 to 64 letters, digits, '.', '_' or '-'")
        return value

    @property
    def storage_path(self) -> Path:
        return self.storage.path or default_storage_path()


def default_storage_path() -> Path:
    """systemd's StateDirectory when run as a service, else a per-user folder."""
    state_dir = os.environ.get("STATE_DIRECTORY")
    if state_dir:
        return Path(state_dir.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "scanner-agent"


def embedded_default_text() -> str:
    return resources.files("agent").joinpath("resources/default.yaml").read_text("utf-8")


def load_config(path: Path | None = None) -> AgentConfig:
    """Load and validate ``path``, or the embedded default when ``path`` is None."""
    source = str(path) if path else "<embedded default>"
    try:
        text = path.read_text("utf-8") if path else embedded_default_text()
    except OSError as exc:
        raise ConfigError(source, [f"<file>: cannot read: {exc.strerror}"]) from exc
    return parse_config(text, source)


def parse_config(text: str, source: str = "<string>") -> AgentConfig:
    return parse_yaml_model(text, source, AgentConfig, empty_ok=True)
