"""Fast AI triage with ONNX Runtime: per-slice inference as images arrive, aggregation at
series completion.

How the daemon uses it::

    engine = TriageEngine.start(cfg.triage, cache_dir)  # start-up: ModelError if a model is bad
    acc = engine.series()                  # one per series
    acc.add(ds)                            # per arriving image, in a worker thread
    triage = acc.result()                  # at completion: a Triage, or None (no model applies)
    sr = triage_sr(triage, acc.header, acc.instances)   # agent.triage.sr: the SR to forward

A model that throws, or a GPU that is absent, never stops anything: a failing model makes the
series' Triage ``status="unavailable"`` with the reason, and ``device: cuda`` without CUDA
falls back to the CPU with a warning. ``acc.add`` and ``acc.result`` never raise.

Session options follow ONNX Runtime's advice for a box shared with other work: a fixed
number of intra-op threads (``triage.threads``), one inter-op thread, no spin-waiting, no
CPU memory arena, and the graph optimised once and saved to the cache (later starts load
the saved graph with optimisation off). Each session is warmed up at start-up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from agent.config import TriageConfig
from agent.domain.verdicts import (
    Alert,
    BodyPartCall,
    Finding,
    Priority,
    Reason,
    Severity,
    Triage,
    Verdict,
    alert_for,
)
from agent.errors import ModelError
from agent.triage.models import Model, load_models, models_dir
from agent.triage.preprocess import prepare

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
BATCH = 32  # slices per session.run in infer_slices
BODY_PART_SYNONYMS = {
    "HEAD": {"HEAD", "BRAIN", "SKULL", "HEADNECK", "CRANIUM"},
    "CHEST": {"CHEST", "THORAX", "LUNG", "HEART", "CHESTABDOMEN"},
    "ABDOMEN": {"ABDOMEN", "LIVER", "PANCREAS", "KIDNEY", "ABDOMENPELVIS", "CHESTABDOMEN"},
    "PELVIS": {"PELVIS", "HIP", "ABDOMENPELVIS", "BLADDER", "PROSTATE"},
}


@dataclass
class Runner:
    """A verified model with its ONNX Runtime session."""

    model: Model
    session: Any  # onnxruntime.InferenceSession
    provider: str

    @property
    def name(self) -> str:
        return self.model.name


@dataclass(frozen=True)
class SliceScores:
    """One model's output for one image (frame): ``scores[label_index]``."""

    sop_instance_uid: str
    scores: F32
    frame: int = 0


def providers_for(device: str) -> list[str]:
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        log.warning("triage.device is cuda but onnxruntime has no CUDA provider; using the CPU")
    return [CPU]


def session_options(threads: int, optimized_path: Path | None, load_optimized: bool) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_cpu_mem_arena = False
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    if load_optimized:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    else:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimized_path is not None:
            opts.optimized_model_filepath = str(optimized_path)
    return opts


def open_session(model: Model, cfg: TriageConfig, cache_dir: Path | None) -> Runner:
    """A session on the best provider available; the CPU if the GPU one fails."""
    providers = providers_for(cfg.device)
    try:
        return _open(model, cfg.threads, cache_dir, providers)
    except Exception as exc:
        if providers == [CPU]:
            raise ModelError(str(model.folder), [f"onnxruntime cannot open it: {exc}"]) from exc
        log.warning("triage: %s on %s failed (%s); using the CPU", model.name, providers[0], exc)
        return _open(model, cfg.threads, cache_dir, [CPU])


def _open(model: Model, threads: int, cache_dir: Path | None, providers: list[str]) -> Runner:
    import onnxruntime as ort

    cached = None
    if cache_dir is not None:
        tag = f"{model.name}-{model.manifest.sha256[:16]}-ort{ort.__version__}-{providers[0]}"
        cached = cache_dir / f"{tag}.onnx"
    if cached is not None and cached.is_file():
        try:
            opts = session_options(threads, None, load_optimized=True)
            sess = ort.InferenceSession(str(cached), opts, providers=providers)
            return Runner(model, sess, sess.get_providers()[0])
        except Exception as exc:  # a stale or damaged cache entry: rebuild it
            log.warning("triage: cached graph %s unusable (%s); rebuilding", cached, exc)
            cached.unlink(missing_ok=True)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
    opts = session_options(threads, cached, load_optimized=False)
    sess = ort.InferenceSession(str(model.onnx_path), opts, providers=providers)
    return Runner(model, sess, sess.get_providers()[0])


def warm_up(runner: Runner) -> None:
    spec = runner.model.manifest.input
    infer_slices(runner, [np.zeros((1, *spec.shape), np.float32)])


# --- per image ----------------------------------------------------------------------------


def modality_values(ds: Any) -> F32:
    """Pixels as float32 frames ``(n, rows, cols)``: HU for CT, raw values otherwise."""
    arr = np.asarray(ds.pixel_array, dtype=np.float32)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if getattr(ds, "SamplesPerPixel", 1) != 1:
        raise ValueError("colour images are not supported")
    if arr.ndim == 2:
        arr = arr[None]
    elif frames == 1:
        raise ValueError(f"unexpected pixel array shape {arr.shape}")
    slope, intercept = _rescale(ds)
    if slope != 1.0 or intercept != 0.0:
        arr = arr * np.float32(slope) + np.float32(intercept)
    if getattr(ds, "Modality", "") == "CT":
        np.clip(arr, -1024.0, 3071.0, out=arr)
    elif getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        arr = arr.max() - arr
    return arr


def _rescale(ds: Any) -> tuple[float, float]:
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        seq = ds.get(groups)
        item = seq[0].get("PixelValueTransformationSequence") if seq else None
        if item:
            return float(item[0].RescaleSlope), float(item[0].RescaleIntercept)
    return 1.0, 0.0


def preprocess(ds: Any, model: Model) -> F32:
    """A data set to model input ``(frames, C, H, W)`` per the model's manifest."""
    spec = model.manifest.input
    frames = modality_values(ds)
    out = [
        prepare(f, (spec.shape[1], spec.shape[2]), crop=spec.crop,
                wins=spec.windows, normalisation=spec.normalisation,
                fill=spec.fill)
        for f in frames
    ]  # fmt: skip
    return np.stack(out)


def infer_slices(runner: Runner, arrays: Sequence[F32]) -> F32:
    """Scores ``(n, labels)`` for ``arrays`` (each ``(C, H, W)`` or ``(k, C, H, W)``)."""
    batch = np.concatenate([a if a.ndim == 4 else a[None] for a in arrays]).astype(np.float32)
    spec = runner.model.manifest
    outs = [
        runner.session.run([spec.outputs.name], {spec.input.name: batch[i : i + BATCH]})[0]
        for i in range(0, len(batch), BATCH)
    ]
    scores: F32 = np.concatenate(outs).astype(np.float32)
    return scores


# --- per series ---------------------------------------------------------------------------


def aggregate(values: F32, method: str, k: int) -> tuple[float, NDArray[np.intp]]:
    """The series score of one label and the indices of the slices that drove it."""
    order = np.argsort(-values, kind="stable")
    if method == "mean":
        return float(values.mean()), order[:k]
    if method == "max":
        return float(values[order[0]]), order[:1]
    top = order[: min(k, len(values))]
    return float(values[top].mean()), top


def priority_of(score: float, stat: float, urgent: float) -> Priority:
    return "stat" if score >= stat else "urgent" if score >= urgent else "routine"


def series_triage(model: Model, slice_scores: Sequence[SliceScores]) -> Triage:
    """Aggregate one triage model's slice scores into findings with their priority."""
    man = model.manifest
    tag = f"{man.name}@{man.version}"
    if not slice_scores:
        return unavailable([tag], f"{man.name}: no slice was scored")
    table = np.stack([s.scores for s in slice_scores])
    findings = []
    for j, label in enumerate(man.outputs.labels):
        if label not in man.thresholds:
            continue
        score, idx = aggregate(table[:, j], man.aggregation.method, man.aggregation.k)
        th = man.thresholds[label]
        slices = tuple(dict.fromkeys(slice_scores[int(i)].sop_instance_uid for i in idx))
        findings.append(Finding(label, round(score, 4), priority_of(score, th.stat, th.urgent),
                                model=tag, slices=slices, threshold=th.urgent))  # fmt: skip
    triage = Triage(priority="routine", findings=tuple(findings), models=(tag,))
    return Triage(priority_for(triage), triage.findings, models=(tag,))


def body_part_call(model: Model, slice_scores: Sequence[SliceScores], header: str) -> BodyPartCall:
    """The body-part model's answer for the series, against the header's BodyPartExamined."""
    labels = model.manifest.outputs.labels
    mean = np.stack([s.scores for s in slice_scores]).mean(axis=0)
    best = int(np.argmax(mean))
    confident = float(mean[best]) >= model.manifest.min_confidence
    predicted = labels[best] if confident else ""
    head = header.strip().upper()
    agrees = (
        None
        if not head or not predicted
        else head in BODY_PART_SYNONYMS.get(predicted, {predicted})
    )
    return BodyPartCall(header=head, predicted=predicted, score=round(float(mean[best]), 4),
                        agrees=agrees, model=f"{model.name}@{model.manifest.version}")  # fmt: skip


def unavailable(models: Sequence[str], reason: str) -> Triage:
    return Triage(priority="routine", status="unavailable", reasons=(reason,), models=tuple(models))


_RANK = {"routine": 0, "urgent": 1, "stat": 2}


def priority_for(triage: Triage | None) -> Priority:
    """The highest priority among the findings; routine without findings."""
    best: Priority = "routine"
    for f in triage.findings if triage else ():
        if _RANK[f.priority] > _RANK[best]:
            best = f.priority
    return best


def severity_for(priority: Priority) -> Severity:
    """Alert severity for a triage priority: stat is critical, urgent a warning."""
    return {"stat": "critical", "urgent": "warning", "routine": "info"}[priority]  # type: ignore[return-value]


def triage_alert(verdict: Verdict) -> Alert | None:
    """The technologist's alert for a verdict's triage: critical for stat, a warning for
    urgent or for triage that was unavailable; None when there is nothing to say."""
    triage = verdict.triage
    if triage is None:
        return None
    flagged = [f for f in triage.findings if f.priority != "routine"]
    reasons = tuple(
        Reason(f"triage.{f.label}", f"{f.label}: score {f.score:.2f} ({f.priority}, {f.model})",
               f.score, f.threshold)
        for f in flagged
    )  # fmt: skip
    if triage.status == "unavailable":
        reasons += tuple(Reason("triage.unavailable", r) for r in triage.reasons)
    if not reasons:
        return None
    priority = priority_for(triage)
    severity = severity_for(priority) if flagged else "warning"
    return alert_for(verdict, "triage", severity, "review" if flagged else "none", reasons)


def combine(parts: Sequence[Triage], body_part: BodyPartCall | None) -> Triage:
    findings = tuple(f for p in parts for f in p.findings)
    reasons = tuple(r for p in parts for r in p.reasons)
    models = tuple(m for p in parts for m in p.models)
    status: Literal["ok", "unavailable"] = "ok"
    if any(p.status == "unavailable" for p in parts):
        status = "unavailable"
    draft = Triage("routine", findings, status=status, reasons=reasons, models=models,
                   body_part=body_part)  # fmt: skip
    return Triage(priority_for(draft), findings, status=status, reasons=reasons, models=models,
                  body_part=body_part)  # fmt: skip


# --- the engine -----------------------------------------------------------------------------


@dataclass
class TriageEngine:
    runners: list[Runner]

    @classmethod
    def start(cls, cfg: TriageConfig, cache_dir: Path | None) -> TriageEngine:
        """Load, verify, open and warm up every model; ModelError names what is wrong."""
        if not cfg.enabled:
            return cls([])
        runners = [open_session(m, cfg, cache_dir) for m in load_models(models_dir(cfg))]
        for r in runners:
            try:
                warm_up(r)
            except Exception as exc:
                raise ModelError(str(r.model.folder), [f"warm-up inference failed: {exc}"]) from exc
            log.info("triage: %s %s on %s", r.name, r.model.manifest.version, r.provider)
        return cls(runners)

    def series(self) -> SeriesTriage:
        return SeriesTriage(self.runners)


@dataclass
class _ModelState:
    runner: Runner
    scores: list[SliceScores] = field(default_factory=list)
    error: str | None = None


class SeriesTriage:
    """Slice scores of one series, accumulated as images arrive (thread-safe)."""

    def __init__(self, runners: Sequence[Runner]) -> None:
        self._runners = list(runners)
        self._states: dict[str, _ModelState] = {}
        self._header = ""
        self._lock = threading.Lock()
        self.header: Dataset | None = None  # the first image's attributes, without pixels
        self.instances: list[tuple[str, str]] = []  # (SOPClassUID, SOPInstanceUID) as added

    def add(self, ds: Any) -> None:
        """Score one image with every model that applies to it. Never raises."""
        uid = str(getattr(ds, "SOPInstanceUID", ""))
        with self._lock:
            self._header = self._header or str(getattr(ds, "BodyPartExamined", "") or "")
            self.instances.append((str(getattr(ds, "SOPClassUID", "")), uid))
            if self.header is None and isinstance(ds, Dataset):
                self.header = _without_pixels(ds)
        for runner in self._runners:
            if not _applies(runner, ds):
                continue
            with self._lock:
                state = self._states.setdefault(runner.name, _ModelState(runner))
                if state.error:
                    continue
            try:
                scores = infer_slices(runner, [preprocess(ds, runner.model)])
                new = [SliceScores(uid, s, i) for i, s in enumerate(scores)]
            except Exception as exc:
                log.warning("triage: %s failed on %s: %s", runner.name, uid, exc)
                with self._lock:
                    state.error = f"{runner.name}: {type(exc).__name__}: {exc}"
                continue
            with self._lock:
                state.scores.extend(new)

    def result(self) -> Triage | None:
        """The series' Triage; None when no model applied. Never raises."""
        with self._lock:
            states = list(self._states.values())
            header = self._header
        if not states:
            return None
        parts: list[Triage] = []
        body: BodyPartCall | None = None
        for st in states:
            man = st.runner.model.manifest
            tag = f"{man.name}@{man.version}"
            try:
                if st.error:
                    parts.append(unavailable([tag], st.error))
                elif man.kind == "body_part":
                    body = body_part_call(st.runner.model, st.scores, header) if st.scores else None
                else:
                    parts.append(series_triage(st.runner.model, st.scores))
            except Exception as exc:
                parts.append(unavailable([tag], f"{man.name}: aggregation failed: {exc}"))
        return combine(parts, body)


def _without_pixels(ds: Dataset) -> Dataset:
    header = Dataset()
    for elem in ds:
        if elem.tag.group < 0x7FE0:
            header.add(elem)
    return header


def _applies(runner: Runner, ds: Any) -> bool:
    try:
        return runner.model.applies_to(ds)
    except Exception:
        return False
