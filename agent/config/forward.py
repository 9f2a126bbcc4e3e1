"""The ``forward`` section: destinations, routes, retry and hold settings."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from agent.config.deidentify import DeidentifyConfig
from agent.config.fields import AETitle, Host, Port, Seconds, Strict, repeated
from agent.config.receiving import TLSConfig

_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
_HD = r"^[A-Za-z0-9 _.-]{0,64}$"  # an HL7 HD namespace id: no delimiters


class DimseDestination(Strict):
    kind: Literal["dimse"] = "dimse"
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    ae_title: AETitle
    host: Host
    port: Port
    calling_ae_title: AETitle | None = None  # default: dicom.ae_title
    timeout_s: Seconds = 30.0
    # parallel associations; more than 1 only where the PACS accepts them at once
    max_associations: int = Field(default=1, ge=1, le=16)
    tls: TLSConfig | None = None
    deidentify: DeidentifyConfig | None = None


class FolderDestination(Strict):
    """A local folder standing in for a PACS (the embedded default)."""

    kind: Literal["folder"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    path: Path | None = None  # None: <storage.path>/outbox/<name>
    deidentify: DeidentifyConfig | None = None


class StowDestination(Strict):
    """A DICOMweb STOW-RS endpoint, e.g. http://pacs:8042/dicom-web."""

    kind: Literal["stow"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str = Field(pattern=r"^https?://")
    timeout_s: Seconds = 30.0
    username: str | None = None
    password_env: str | None = None  # the password comes from this environment variable
    deidentify: DeidentifyConfig | None = None


class Hl7Destination(Strict):
    """A RIS or EHR interface engine taking HL7 v2.5 ORU^R01 over MLLP: one per verdict."""

    kind: Literal["hl7"]
    name: str = Field(pattern=_NAME)
    host: Host
    port: Port
    timeout_s: Seconds = 30.0  # for the connection and for the ACK
    sending_application: str = Field(default="SCANNER-AGENT", pattern=_HD)
    sending_facility: str = Field(default="", pattern=_HD)
    receiving_application: str = Field(default="", pattern=_HD)
    receiving_facility: str = Field(default="", pattern=_HD)


class FhirDestination(Strict):
    """A FHIR R4 server: a transaction Bundle (DiagnosticReport, Observations) per verdict."""

    kind: Literal["fhir"]
    name: str = Field(pattern=_NAME)
    url: str = Field(pattern=r"^https?://")  # the base, e.g. http://ehr:8080/fhir
    timeout_s: Seconds = 30.0
    username: str | None = None
    password_env: str | None = None  # the password comes from this environment variable
    token_env: str | None = None  # a bearer token from this environment variable


DESTINATION_KINDS = frozenset({"dimse", "folder", "stow", "hl7", "fhir"})  # union tags
MESSAGE_KINDS = frozenset({"hl7", "fhir"})  # these get verdicts, not images


def _destination_kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return str(value.get("kind", "dimse"))
    return str(getattr(value, "kind", "dimse"))


Destination = Annotated[
    Annotated[DimseDestination, Tag("dimse")]
    | Annotated[FolderDestination, Tag("folder")]
    | Annotated[StowDestination, Tag("stow")]
    | Annotated[Hl7Destination, Tag("hl7")]
    | Annotated[FhirDestination, Tag("fhir")],
    Discriminator(
        _destination_kind,
        custom_error_type="destination_kind",
        custom_error_message="kind must be 'dimse', 'folder', 'stow', 'hl7' or 'fhir'",
    ),
]


class RouteWhen(Strict):
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


class Route(Strict):
    name: str = ""
    when: RouteWhen = RouteWhen()
    to: list[str] = Field(min_length=1)


class RetryConfig(Strict):
    initial_s: float = Field(default=1.0, gt=0, le=3600)
    max_s: float = Field(default=300.0, gt=0, le=86400)
    jitter: float = Field(default=0.2, ge=0, le=1)


class ForwardConfig(Strict):
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
        if dupes := repeated(names):
            raise ValueError(f"destination names must be unique; repeated: {', '.join(dupes)}")
        used = [n for r in self.routes for n in r.to] + list(self.default_to or [])
        unknown = sorted(set(used) - set(names))
        if unknown:
            raise ValueError(f"routes name unknown destinations: {', '.join(unknown)}")
        return self
