"""Typed configuration, loaded from one YAML file.

Every model forbids unknown keys, so a typo is an error rather than a silently
ignored setting. :func:`load_config` raises :class:`ConfigError`, whose
``problems`` name each error by its YAML path (``dicom.port``) with a plain reason.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ByteSize,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.errors import ConfigError

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII without backslash
# agent_id is one MQTT topic level and a file name: no wildcard, '/', NUL or '$' can get in
_AGENT_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")


def _repeated(names: list[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be between 1 and 65535")
    return value


def _ae_title(value: str) -> str:
    if not _AE_RE.match(value) or not value.strip():
        raise ValueError("must be 1 to 16 printable ASCII characters, not all spaces, no backslash")
    return value.strip()


def _host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not re.match(r"^[A-Za-z0-9.-]{1,253}$", value):
            raise ValueError("must be an IP address or a host name") from None
    return value


Port = Annotated[int, AfterValidator(_port)]
AETitle = Annotated[str, AfterValidator(_ae_title)]
Host = Annotated[str, AfterValidator(_host)]
Seconds = Annotated[float, Field(gt=0, le=86400)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSConfig(_Strict):
    """TLS for a DICOM listener or connection; paths are PEM files."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    require_client_cert: bool = True


class StorageConfig(_Strict):
    path: Path | None = None  # None: $STATE_DIRECTORY, else ~/.local/state/scanner-agent
    min_free_bytes: ByteSize = ByteSize(1 << 30)  # refuse (0xA700) below this much free disk
    max_spool_bytes: ByteSize | None = None  # refuse above this much spooled data
    retention_hours: float = Field(default=24.0, ge=0)  # keep delivered files this long
    purge_interval_s: Seconds = 60.0


class DicomConfig(_Strict):
    ae_title: AETitle = "EDGE"
    bind: Host = "0.0.0.0"
    port: Port = 11112
    allowed_calling_aets: list[AETitle] = []  # empty: any calling AE
    require_called_aet: bool = True
    max_associations: int = Field(default=16, ge=1, le=256)
    max_pdu: int = Field(default=262144, ge=0, le=1 << 26)  # 0: unlimited
    network_timeout_s: Seconds = 60.0
    # from connecting (TLS handshake included) to a complete A-ASSOCIATE-RQ; also ACSE/ARTIM
    acse_timeout_s: Seconds = 10.0
    max_associations_per_peer: int | None = Field(default=None, ge=1, le=256)  # None: no cap
    # one data set as received; beyond it the transfer is discarded and answered 0xA700
    max_dataset_bytes: ByteSize = Field(default=ByteSize(2 << 30), ge=1 << 20)
    # a deflated data set's inflated size; pydicom (here and in QC and forwarding) inflates
    # in memory, so this bounds the memory one instance can cost; beyond it 0xA700
    max_inflated_bytes: ByteSize = Field(default=ByteSize(256 << 20), ge=1 << 20)
    max_sequence_depth: int = Field(default=32, ge=1, le=100)  # deeper: 0xC210
    tls: TLSConfig | None = None


class SeriesConfig(_Strict):
    """When a series counts as complete; see :mod:`agent.series.assembler`."""

    grace_s: float = Field(default=0.5, ge=0, le=10)  # after the last association's release
    idle_timeout_s: dict[str, Seconds] = {"default": 60.0, "CT": 30.0, "MR": 60.0}

    @field_validator("idle_timeout_s")
    @classmethod
    def _needs_default(cls, value: dict[str, float]) -> dict[str, float]:
        if "default" not in value:
            raise ValueError("must have a 'default' entry")
        return value


class DimseDestination(_Strict):
    kind: Literal["dimse"] = "dimse"
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    ae_title: AETitle
    host: Host
    port: Port
    calling_ae_title: AETitle | None = None  # default: dicom.ae_title
    timeout_s: Seconds = 30.0
    tls: TLSConfig | None = None


class FolderDestination(_Strict):
    """A local folder standing in for a PACS (the embedded default)."""

    kind: Literal["folder"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    path: Path | None = None  # None: <storage.path>/outbox/<name>


class StowDestination(_Strict):
    """A DICOMweb STOW-RS endpoint, e.g. http://pacs:8042/dicom-web."""

    kind: Literal["stow"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str = Field(pattern=r"^https?://")
    timeout_s: Seconds = 30.0
    username: str | None = None
    password_env: str | None = None  # the password comes from this environment variable


def _destination_kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return str(value.get("kind", "dimse"))
    return str(getattr(value, "kind", "dimse"))


Destination = Annotated[
    Annotated[DimseDestination, Tag("dimse")]
    | Annotated[FolderDestination, Tag("folder")]
    | Annotated[StowDestination, Tag("stow")],
    Discriminator(
        _destination_kind,
        custom_error_type="destination_kind",
        custom_error_message="kind must be 'dimse', 'folder' or 'stow'",
    ),
]


class RouteWhen(_Strict):
    """Conditions, all of which must hold; an empty list means any value."""

    modality: list[str] = []
    body_part: list[str] = []
    station_name: list[str] = []
    calling_aet: list[str] = []
    series_description: str | None = None  # a regular expression, searched case-insensitively
    priority: list[Literal["stat", "urgent", "routine"]] = []
    findings: list[str] = []  # any of these triage finding labels

    @field_validator("series_description")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class Route(_Strict):
    name: str = ""
    when: RouteWhen = RouteWhen()
    to: list[str] = Field(min_length=1)


class RetryConfig(_Strict):
    initial_s: float = Field(default=1.0, gt=0, le=3600)
    max_s: float = Field(default=300.0, gt=0, le=86400)
    jitter: float = Field(default=0.2, ge=0, le=1)


class ForwardConfig(_Strict):
    destinations: list[Destination] = []
    routes: list[Route] = []  # every matching route adds its destinations
    default_to: list[str] | None = None  # when no route matches; None: every destination
    hold_timeout_s: Seconds = 600.0
    retry: RetryConfig = RetryConfig()
    alert_after_s: Seconds = 900.0  # a system alert when the oldest undelivered is older
    batch_size: int = Field(default=64, ge=1, le=1024)

    @model_validator(mode="after")
    def _names(self) -> ForwardConfig:
        names = [d.name for d in self.destinations]
        if dupes := _repeated(names):
            raise ValueError(f"destination names must be unique; repeated: {', '.join(dupes)}")
        used = [n for r in self.routes for n in r.to] + list(self.default_to or [])
        unknown = sorted(set(used) - set(names))
        if unknown:
            raise ValueError(f"routes name unknown destinations: {', '.join(unknown)}")
        return self


class MqttTLSConfig(_Strict):
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


class MqttConfig(_Strict):
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


class AlertsConfig(_Strict):
    """What patient data alerts and verdicts carry; see docs/alerts.md."""

    include_patient_data: bool = True  # False: not even the accession number
    patient_fields: list[PatientField] = []  # DICOM keywords, added on purpose
    feed_max_bytes: ByteSize = ByteSize(10 << 20)  # <storage>/feed.jsonl rotates past this

    @model_validator(mode="after")
    def _fields_need_switch(self) -> AlertsConfig:
        if self.patient_fields and not self.include_patient_data:
            raise ValueError("patient_fields needs include_patient_data: true")
        return self


class MrdConfig(_Strict):
    bind: Host = "0.0.0.0"
    port: Port = 9002
    max_message_bytes: ByteSize = ByteSize(64 << 20)  # one MRD message; larger ends the stream
    max_slice_bytes: ByteSize = ByteSize(512 << 20)  # one slice's k-space buffer
    max_open_bytes: ByteSize = ByteSize(1 << 30)  # all open slices of one connection
    max_connections: int = Field(default=4, ge=1, le=64)  # more are closed at once
    idle_timeout_s: Seconds = 60.0  # a connection silent this long is closed


class MetricsConfig(_Strict):
    """Prometheus text at ``http://<bind>:<port>/metrics``; loopback unless chosen on purpose."""

    bind: Host = "127.0.0.1"
    port: Port = 9108


class ComputeConfig(_Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: int = Field(default=2, ge=1, le=64)


class ModelSetting(_Strict):
    """One model's site setting. ``shadow``: its scores are recorded in the verdict and the SR
    but raise no alert and change no priority, so a site can validate it before it acts."""

    name: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    mode: Literal["active", "shadow"] = "active"


class TriageConfig(_Strict):
    """AI triage (see agent/triage/engine.py); ``models_dir`` None: the models shipped with the agent.
    A model not named in ``models`` is active."""

    enabled: bool = True
    models_dir: Path | None = None
    threads: int = Field(default=1, ge=1, le=64)  # ONNX Runtime intra-op threads per model
    device: Literal["auto", "cpu", "cuda"] = "auto"
    models: list[ModelSetting] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_models(self) -> TriageConfig:
        if twice := _repeated([m.name for m in self.models]):
            raise ValueError(f"models: each model may be named once; twice: {twice}")
        return self

    def mode_of(self, name: str) -> Literal["active", "shadow"]:
        return next((m.mode for m in self.models if m.name == name), "active")


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class QCConfig(_Strict):
    """Image QC (see agent/qc/protocols.py); ``protocols: null`` is the shipped file."""

    enabled: bool = True
    protocols: Path | None = None


class AgentConfig(_Strict):
    agent_id: str = "edge-1"
    storage: StorageConfig = StorageConfig()
    dicom: DicomConfig = DicomConfig()
    series: SeriesConfig = SeriesConfig()
    forward: ForwardConfig = ForwardConfig()
    mqtt: MqttConfig | None = None  # omitted: alerts go to the log and the local feed
    mrd: MrdConfig | None = None  # omitted: no raw-data listener
    metrics: MetricsConfig | None = None  # omitted: no /metrics endpoint
    alerts: AlertsConfig = AlertsConfig()
    compute: ComputeConfig = ComputeConfig()
    triage: TriageConfig = TriageConfig()
    logging: LoggingConfig = LoggingConfig()
    qc: QCConfig = QCConfig()

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


M = TypeVar("M", bound=BaseModel)


def parse_yaml_model(text: str, source: str, model: type[M], *, empty_ok: bool = False) -> M:
    """Parse YAML into ``model``; every problem becomes a ConfigError line with its YAML path."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"<yaml>: {_yaml_reason(exc)}"]) from exc
    if data is None and empty_ok:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(source, ["<root>: must be a mapping of keys to values"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(err) for err in exc.errors()]) from exc


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def _describe(err: Any) -> str:
    path = _yaml_path(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{path}: unknown key"
    if kind == "missing":
        return f"{path}: required"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{path}: {msg[0].lower()}{msg[1:]}" if msg else f"{path}: invalid"


def _yaml_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]"]
        elif item in ("dimse", "folder", "stow"):  # discriminated-union tags, not YAML keys
            continue
        else:
            parts.append(str(item))
    return ".".join(parts) or "<root>"
