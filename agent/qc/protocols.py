"""QC protocols: which thresholds apply to a series, loaded from ``config/qc-protocols.yaml``.

The file (``schema: scanner-agent.qc-protocols/1``) has three parts:

- ``defaults``: per modality (``CT``, ``MR``, ``DX``), the thresholds used when no protocol
  matches. ``default_aliases`` maps other modality codes onto them (``CR`` -> ``DX``).
- ``protocols``: a list, first match wins. A protocol matches when its ``match`` regular
  expressions match the series' Modality and BodyPartExamined (whole value,
  case-insensitive) and SeriesDescription (searched anywhere, case-insensitive); an empty
  attribute matches only ``.*``-like patterns.
- ``aggregation``: how per-image results become a series result (see :mod:`agent.qc.series_qc`).

Each threshold names a measured metric (``metric``, default: the entry's own name), a
``direction`` (``high``: larger is worse, ``low``: smaller is worse) and ``warn``/``fail``
levels; a value at or beyond a level reaches it, as in ``benchmarks/eval_qc.py``.

:func:`load_protocols` raises :class:`agent.errors.ConfigError` naming each problem by its
YAML path (``protocols[0].metrics.ring_hu.warn: ...``), as :func:`agent.config.load_config`.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from agent.config import parse_yaml_model
from agent.errors import ConfigError

SCHEMA = "scanner-agent.qc-protocols/1"
SHIPPED = "resources/qc-protocols.yaml"


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


Regex = Annotated[str, AfterValidator(_regex)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Threshold(_Strict):
    """Warn and fail levels of one metric; ``metric`` defaults to the entry's name."""

    direction: Literal["high", "low"]
    warn: float
    fail: float | None  # None: the metric warns but never fails a series
    metric: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if self.fail is None:
            return self
        if self.direction == "high" and self.warn > self.fail:
            raise ValueError("warn must not be above fail when direction is high")
        if self.direction == "low" and self.warn < self.fail:
            raise ValueError("warn must not be below fail when direction is low")
        return self

    def level(self, value: float) -> int:
        """0 below warn, 1 at or beyond warn, 2 at or beyond fail (NaN: 0, not measured)."""
        sign = 1.0 if self.direction == "high" else -1.0
        v = sign * value
        if self.fail is not None and v >= sign * self.fail:
            return 2
        return 1 if v >= sign * self.warn else 0


class Match(_Strict):
    modality: Regex = ".*"
    body_part: Regex = ".*"
    series_description: Regex = ".*"

    def matches(self, modality: str, body_part: str, description: str) -> bool:
        flags = re.IGNORECASE
        return bool(
            re.fullmatch(self.modality, modality.strip(), flags)
            and re.fullmatch(self.body_part, body_part.strip(), flags)
            and re.search(self.series_description, description.strip(), flags)
        )


class Protocol(_Strict):
    name: str = Field(min_length=1, max_length=64)
    match: Match = Match()
    metrics: dict[str, Threshold] = {}

    def metric_key(self, name: str) -> str:
        return self.metrics[name].metric or name


class Aggregation(_Strict):
    """Series rule (see :mod:`agent.qc.series_qc`): fractions of the measured images."""

    fail_fraction: float = Field(default=0.10, gt=0, le=1)  # at fail level -> series fails
    warn_fraction: float = Field(default=0.10, gt=0, le=1)  # at warn level or above -> warns


class Protocols(_Strict):
    schema_: Literal["scanner-agent.qc-protocols/1"] = Field(
        "scanner-agent.qc-protocols/1", alias="schema"
    )
    generated_by: str = ""
    aggregation: Aggregation = Aggregation()
    default_aliases: dict[str, str] = {"CR": "DX", "DR": "DX"}
    defaults: dict[str, dict[str, Threshold]] = {}
    protocols: list[Protocol] = []

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def shipped_text() -> str:
    """The shipped ``config/qc-protocols.yaml`` (a symlink in ``agent/resources``)."""
    return resources.files("agent").joinpath(SHIPPED).read_text("utf-8")


def load_protocols(path: Path | None = None) -> Protocols:
    """Load and validate ``path``, or the shipped protocols when ``path`` is None."""
    source = str(path) if path else "<shipped qc-protocols.yaml>"
    try:
        text = path.read_text("utf-8") if path else shipped_text()
    except OSError as exc:
        raise ConfigError(source, [f"<file>: cannot read: {exc.strerror}"]) from exc
    return parse_protocols(text, source)


def parse_protocols(text: str, source: str = "<string>") -> Protocols:
    return parse_yaml_model(text, source, Protocols)


def match_protocol(
    protocols: Protocols, modality: str, body_part: str, description: str
) -> Protocol | None:
    """The first matching protocol, else the modality's defaults, else None (no QC)."""
    for proto in protocols.protocols:
        if proto.match.matches(modality, body_part, description):
            return proto
    mod = modality.strip().upper()
    key = mod if mod in protocols.defaults else protocols.default_aliases.get(mod, "")
    if key in protocols.defaults:
        return Protocol(name=f"default-{key}", metrics=protocols.defaults[key])
    return None
