"""The model registry: ONNX models as data under ``models/<name>/``.

Each model folder holds ``model.onnx``, ``manifest.yaml`` and ``MODEL_CARD.md``. The manifest
says which series a model applies to, how to turn a slice into its input, what its outputs
mean and which scores map to which priority; ``sha256`` pins the ONNX file. Loading checks
everything at start-up: a malformed manifest, a missing file, a hash mismatch or an input
spec that does not match the ONNX graph raises :class:`~agent.errors.ModelError` naming
every problem. Nothing is skipped silently. ``check-config`` runs the same checks
(:func:`check_triage`).

Where the models are: ``triage.models_dir`` when set; else the shipped ones, package data
under ``agent/resources/models`` (in a source checkout a link to ``models/``).
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.config import AgentConfig, TriageConfig, describe
from agent.errors import ConfigError, ModelError

MATCH_KEYS = ("Modality", "BodyPartExamined", "SeriesDescription")
PRIORITIES = ("stat", "urgent")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    name: str = "image"
    shape: tuple[int, int, int]  # channels, height, width
    crop: Literal["pad_square", "center_square", "none"] = "pad_square"
    fill: float | None = None  # padding value; None: the image minimum
    windows: list[tuple[float, float]] = []  # CT: [center, width] in HU, one channel each
    normalisation: Literal["zscore", "minmax"] | None = None  # MR, DX: one channel
    slice_context: int = Field(default=0, ge=0, le=0)  # only single slices so far

    @model_validator(mode="after")
    def _channels(self) -> InputSpec:
        if any(w <= 0 for _, w in self.windows):
            raise ValueError("every window width must be positive")
        if self.windows and self.normalisation:
            raise ValueError("give windows (CT) or normalisation (MR, DX), not both")
        want = len(self.windows) if self.windows else 1
        if self.shape[0] != want:
            raise ValueError(f"shape has {self.shape[0]} channel(s) but the spec makes {want}")
        if min(self.shape) < 1:
            raise ValueError("shape entries must be positive")
        return self


class OutputSpec(_Strict):
    name: str = "scores"
    labels: list[str] = Field(min_length=1)


class Aggregation(_Strict):
    """Slice scores to a series score. ``length_reference`` and ``length_slope`` correct a
    series longer than the reference for its extra chances of one high normal slice: its score
    loses ``length_slope * ln(slices / length_reference)`` in logit (a shorter one is left
    as it is), so the thresholds keep their false-alarm rate on long series."""

    method: Literal["max", "top_k_mean", "mean"] = "max"
    k: int = Field(default=1, ge=1, le=64)
    length_reference: int | None = Field(default=None, ge=1, le=4096)
    length_slope: float = Field(default=0.0, ge=0.0, le=5.0)


class Thresholds(_Strict):
    stat: float = Field(ge=0, le=1)
    urgent: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _order(self) -> Thresholds:
        if self.stat < self.urgent:
            raise ValueError("stat must be at or above urgent")
        return self


class GateSpec(_Strict):
    """What a model was made for; anything else is "not applicable" (agent/triage/applicability.py)."""

    modalities: list[str] = Field(default_factory=list)  # [] = any
    min_matrix: int = Field(default=0, ge=0)
    field_of_view_mm: tuple[float, float] | None = None
    air_hu_at_most: float | None = None
    top_hu_at_most: float | None = None
    exclude_image_types: list[str] = Field(default_factory=list)
    body_part: str | None = None  # the body-part model's label this model expects

    @model_validator(mode="after")
    def _range(self) -> GateSpec:
        fov = self.field_of_view_mm
        if fov is not None and not 0 < fov[0] < fov[1]:
            raise ValueError("field_of_view_mm must be [low, high] with 0 < low < high")
        return self


class Manifest(_Strict):
    name: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    version: str = Field(min_length=1)
    kind: Literal["triage", "body_part"] = "triage"
    description: str = ""
    file: str = "model.onnx"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    applies_to: list[dict[str, list[str]]] = Field(min_length=1)
    gate: GateSpec = GateSpec()
    input: InputSpec
    outputs: OutputSpec
    aggregation: Aggregation = Aggregation()
    thresholds: dict[str, Thresholds] = {}
    min_confidence: float = Field(default=0.5, ge=0, le=1)  # body_part: below this, no call

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        for i, rule in enumerate(self.applies_to):
            unknown = sorted(set(rule) - set(MATCH_KEYS))
            if unknown:
                raise ValueError(f"applies_to[{i}]: unknown keys {unknown}; use {MATCH_KEYS}")
        extra = sorted(set(self.thresholds) - set(self.outputs.labels))
        if extra:
            raise ValueError(f"thresholds name labels the model lacks: {extra}")
        if self.kind == "triage" and not self.thresholds:
            raise ValueError("a triage model needs thresholds for at least one label")
        return self


@dataclass(frozen=True)
class Model:
    """A loaded, verified model: its manifest and where its files are."""

    manifest: Manifest
    folder: Path

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def tag(self) -> str:
        """``name@version``, as findings and reasons name the model."""
        return f"{self.manifest.name}@{self.manifest.version}"

    @property
    def onnx_path(self) -> Path:
        return self.folder / self.manifest.file

    def applies_to(self, ds: Any) -> bool:
        """Whether any ``applies_to`` rule matches the data set (or mapping) ``ds``."""
        return any(_rule_matches(rule, ds) for rule in self.manifest.applies_to)


def _rule_matches(rule: Mapping[str, Sequence[str]], ds: Any) -> bool:
    for key, patterns in rule.items():
        raw = ds.get(key) if isinstance(ds, Mapping) else getattr(ds, key, None)
        value = str(raw or "").strip().upper()
        if not any(fnmatch.fnmatchcase(value, p.upper()) for p in patterns):
            return False
    return True


def default_models_dir() -> Path:
    """The shipped models, as package data: ``agent/resources/models`` links to ``models/`` in
    a source checkout and is a real folder in an installed wheel, so one lookup serves both."""
    shipped = resources.files("agent").joinpath("resources", "models")
    return Path(str(shipped)).resolve()  # a checkout's link resolves to models/ itself


def models_dir(cfg: TriageConfig) -> Path:
    return cfg.models_dir or default_models_dir()


def load_models(folder: Path) -> list[Model]:
    """Every model under ``folder`` (one per sub-folder with a manifest), verified."""
    if not folder.is_dir():
        raise ModelError(str(folder), ["models folder not found"])
    problems: list[str] = []
    loaded: list[Model] = []
    for sub in sorted(p for p in folder.iterdir() if (p / "manifest.yaml").exists()):
        try:
            loaded.append(load_model(sub))
        except ModelError as exc:
            problems += [f"{sub.name}: {p}" for p in exc.problems]
    if problems:
        raise ModelError(str(folder), problems)
    if not loaded:
        raise ModelError(str(folder), ["no model folders (each needs a manifest.yaml)"])
    return loaded


def load_model(folder: Path) -> Model:
    manifest = read_manifest(folder / "manifest.yaml")
    model = Model(manifest, folder)
    problems = _file_problems(model)
    if not problems:
        problems = graph_problems(model)
    if problems:
        raise ModelError(str(folder), problems)
    return model


def read_manifest(path: Path) -> Manifest:
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except OSError as exc:
        raise ModelError(str(path), [f"cannot read: {exc.strerror}"]) from exc
    except yaml.YAMLError as exc:
        raise ModelError(str(path), [f"not valid YAML: {exc}"]) from exc
    if not isinstance(data, Mapping):
        raise ModelError(str(path), ["must be a mapping of keys to values"])
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ModelError(str(path), [f"manifest.yaml {describe(e)}" for e in exc.errors()]) from exc


def _file_problems(model: Model) -> list[str]:
    problems = [f"{name}: missing" for name in ("MODEL_CARD.md",)
                if not (model.folder / name).is_file()]  # fmt: skip
    path = model.onnx_path
    if not path.is_file():
        return [*problems, f"{model.manifest.file}: missing"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != model.manifest.sha256:
        problems.append(
            f"{model.manifest.file}: sha256 mismatch: manifest says {model.manifest.sha256}, "
            f"file has {digest}"
        )
    return problems


def graph_problems(model: Model) -> list[str]:
    """Differences between the manifest's input/output spec and the ONNX graph."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        return [f"{model.manifest.file}: onnxruntime cannot load it: {exc}"]
    spec, out = model.manifest.input, model.manifest.outputs
    inputs = {i.name: list(i.shape) for i in sess.get_inputs()}
    outputs = {o.name: list(o.shape) for o in sess.get_outputs()}
    problems: list[str] = []
    if spec.name not in inputs:
        problems.append(f"input.name: graph has no input {spec.name!r} (it has {sorted(inputs)})")
    else:
        shape = inputs[spec.name]
        if len(shape) != 4 or shape[1:] != list(spec.shape):
            problems.append(
                f"input.shape: manifest says [batch, {', '.join(map(str, spec.shape))}], "
                f"graph input {spec.name!r} is {shape}"
            )
        elif isinstance(shape[0], int):
            problems.append(
                f"input: the graph's batch axis is fixed at {shape[0]}; it must be dynamic"
            )
    if out.name not in outputs:
        problems.append(
            f"outputs.name: graph has no output {out.name!r} (it has {sorted(outputs)})"
        )
    elif len(outputs[out.name]) != 2 or outputs[out.name][1] != len(out.labels):
        problems.append(
            f"outputs.labels: {len(out.labels)} label(s), graph output is {outputs[out.name]}"
        )
    return problems


def check_triage(cfg: AgentConfig, source: str) -> list[str]:
    """For ``check-config``: one line per model, or ConfigError with a line per problem."""
    if not cfg.triage.enabled:
        return ["triage: disabled"]
    try:
        loaded = load_models(models_dir(cfg.triage))
    except ModelError as exc:
        raise ConfigError(
            source, [f"triage.models_dir: {exc.source}: {p}" for p in exc.problems]
        ) from exc
    if problems := unknown_settings(cfg.triage, loaded):
        raise ConfigError(source, problems)
    return [
        f"triage: {m.name} {m.manifest.version} ({m.manifest.kind}, "
        f"{cfg.triage.mode_of(m.name)}) from {m.folder}"
        for m in loaded
    ]


def unknown_settings(cfg: TriageConfig, loaded: Sequence[Model]) -> list[str]:
    """``triage.models`` entries that name no loaded model: a typo must not leave a model
    active that the site meant to shadow."""
    names = {m.name for m in loaded}
    return [
        f"triage.models[{i}].name: no model {s.name!r} in {models_dir(cfg)} "
        f"(there are: {', '.join(sorted(names))})"
        for i, s in enumerate(cfg.models)
        if s.name not in names
    ]
