"""Sections for the agent's own services: metrics, compute, triage, logging and QC."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from agent.config.fields import Host, Port, Strict, repeated


class MetricsConfig(Strict):
    """Prometheus text at ``http://<bind>:<port>/metrics``; loopback unless chosen on purpose."""

    bind: Host = "127.0.0.1"
    port: Port = 9108


class ComputeConfig(Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: int = Field(default=2, ge=1, le=64)


class ModelSetting(Strict):
    """One model's site setting. ``shadow``: its scores are recorded in the verdict and the SR
    but raise no alert and change no priority, so a site can validate it before it acts."""

    name: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    mode: Literal["active", "shadow"] = "active"


class TriageConfig(Strict):
    """AI triage (see agent/triage/engine.py); ``models_dir`` None: the models shipped with the agent.
    A model not named in ``models`` is active."""

    enabled: bool = True
    models_dir: Path | None = None
    threads: int = Field(default=1, ge=1, le=64)  # ONNX Runtime intra-op threads per model
    device: Literal["auto", "cpu", "cuda"] = "auto"
    models: list[ModelSetting] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_models(self) -> TriageConfig:
        if twice := repeated([m.name for m in self.models]):
            raise ValueError(f"models: each model may be named once; twice: {twice}")
        return self

    def mode_of(self, name: str) -> Literal["active", "shadow"]:
        return next((m.mode for m in self.models if m.name == name), "active")


class LoggingConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class QCConfig(Strict):
    """Image QC (see agent/qc/protocols.py); ``protocols: null`` is the shipped file."""

    enabled: bool = True
    protocols: Path | None = None
