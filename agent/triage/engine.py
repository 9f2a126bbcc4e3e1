"""Fast AI triage with ONNX Runtime: per-slice inference as images arrive, aggregation at
series completion.

How the daemon uses it::

    engine = TriageEngine.start(cfg.triage, cache_dir)  # start-up: ModelError if a model is bad
    acc = engine.series()                  # one per series
    acc.add(ds)                            # per arriving image, in a worker thread
    triage = acc.result()                  # at completion: a Triage, or None (no model applies)
    sr = triage_sr(triage, acc.header, acc.instances)   # agent.triage.sr: the SR to forward

A model scores only what it was made for: images its manifest's ``gate`` rules out (a
localizer, a tiny matrix, no air in a "head" CT) are counted with their reason, and a series
none of whose images passes gets triage ``not_applicable``, never a score
(:mod:`agent.triage.applicability`). A model in shadow mode (``triage.models[].mode``) is
scored and recorded but raises no alert and changes no priority.

A model that throws, or a GPU that is absent, never stops anything: a failing model makes the
series' Triage ``status="unavailable"`` with the reason, and ``device: cuda`` without CUDA
falls back to the CPU with a warning (:mod:`agent.triage.sessions`). ``acc.add`` and
``acc.result`` never raise.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from agent.config import TriageConfig
from agent.domain.verdicts import BodyPartCall, Triage
from agent.errors import ModelError
from agent.triage.applicability import body_part_reason, header_reason, pixel_reason
from agent.triage.models import Model, load_models, models_dir, unknown_settings
from agent.triage.preprocess import prepare
from agent.triage.scoring import (
    SliceScores,
    body_part_call,
    combine,
    not_applicable,
    series_triage,
    unavailable,
)
from agent.triage.sessions import Runner, infer_slices, open_session, warm_up

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]


# --- per image ----------------------------------------------------------------------------


def modality_values(ds: Any) -> F32:
    """Pixels as float32 frames ``(n, rows, cols)``: HU for CT (not clipped, so the gate can
    see a wrong rescale), raw values otherwise."""
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
    if getattr(ds, "Modality", "") != "CT" and (
        getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1"
    ):
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
    return model_input(modality_values(ds), model, getattr(ds, "Modality", "") == "CT")


def model_input(frames: F32, model: Model, ct: bool) -> F32:
    """Modality frames to model input ``(frames, C, H, W)``; CT is clipped to -1024..3071 HU."""
    spec = model.manifest.input
    if ct:
        frames = np.clip(frames, -1024.0, 3071.0)
    out = [
        prepare(f, (spec.shape[1], spec.shape[2]), crop=spec.crop,
                wins=spec.windows, normalisation=spec.normalisation,
                fill=spec.fill)
        for f in frames
    ]  # fmt: skip
    return np.stack(out)


# --- the engine -----------------------------------------------------------------------------


@dataclass
class TriageEngine:
    runners: list[Runner]

    @classmethod
    def start(cls, cfg: TriageConfig, cache_dir: Path | None) -> TriageEngine:
        """Load, verify, open and warm up every model; ModelError names what is wrong."""
        if not cfg.enabled:
            return cls([])
        folder = models_dir(cfg)
        models = load_models(folder)
        if problems := unknown_settings(cfg, models):
            raise ModelError(str(folder), problems)
        runners = [open_session(m, cfg, cache_dir) for m in models]
        for r in runners:
            try:
                warm_up(r)
            except Exception as exc:
                raise ModelError(str(r.model.folder), [f"warm-up inference failed: {exc}"]) from exc
            log.info("triage: %s %s on %s (%s)", r.name, r.model.manifest.version, r.provider,
                     r.mode)  # fmt: skip
        return cls(runners)

    def series(self) -> SeriesTriage:
        return SeriesTriage(self.runners)

    def set_modes(self, cfg: TriageConfig) -> list[str]:
        """Each model's active/shadow mode from a reloaded config, for the series judged from
        now on; nothing changes, and the problems are returned, if it names an unknown model."""
        if problems := unknown_settings(cfg, [r.model for r in self.runners]):
            return problems
        for r in self.runners:
            r.mode = cfg.mode_of(r.model.name)
        return []


@dataclass
class _ModelState:
    runner: Runner
    scores: list[SliceScores] = field(default_factory=list)
    error: str | None = None
    gated: Counter[str] = field(default_factory=Counter)  # reason -> images (frames) ruled out
    by_tags: bool = False  # some image matched ``applies_to``; else only the body-part model

    @property
    def tag(self) -> str:
        return self.runner.model.tag


class SeriesTriage:
    """Slice scores of one series, accumulated as images arrive (thread-safe)."""

    def __init__(self, runners: Sequence[Runner]) -> None:
        # the body-part model first: its call on an image can make a model apply to it
        self._runners = sorted(runners, key=lambda r: r.model.manifest.kind != "body_part")
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
        frames: F32 | None = None
        parts: set[str] = set()  # what the body-part model confidently calls this image
        for runner in self._runners:
            by_tags = _applies(runner, ds)
            wanted = runner.model.manifest.gate.body_part
            if not by_tags and not (wanted and wanted.upper() in parts):
                continue
            with self._lock:
                state = self._states.setdefault(runner.name, _ModelState(runner))
                state.by_tags |= by_tags
                if state.error:
                    continue
            if reason := header_reason(runner.model.manifest.gate, ds):
                with self._lock:
                    state.gated[reason] += 1
                continue
            try:
                frames = modality_values(ds) if frames is None else frames
                new, gated = _score(runner, ds, uid, frames)
            except Exception as exc:
                log.warning("triage: %s failed on %s: %s", runner.name, uid, exc)
                with self._lock:
                    state.error = f"{runner.name}: {type(exc).__name__}: {exc}"
                continue
            with self._lock:
                state.scores.extend(new)
                state.gated.update(gated)
            if runner.model.manifest.kind == "body_part":
                parts |= _confident_parts(runner.model, new)

    def result(self) -> Triage | None:
        """The series' Triage; None when no model applied. Never raises."""
        with self._lock:
            states = list(self._states.values())
            header = self._header
        if not states:
            return None
        body = self._body_part(states, header)
        parts: list[Triage] = []
        for st in states:
            if st.runner.model.manifest.kind == "body_part":
                if st.error:  # the veto and enrichment are missing: say so
                    parts.append(unavailable([st.tag], st.error))
                continue
            if not st.by_tags and not _called(st.runner.model.manifest.gate.body_part, body):
                continue  # head-looking slices in a series that is not a head: not this model's
            try:
                parts.append(_model_triage(st, body))
            except Exception as exc:
                parts.append(unavailable([st.tag], f"{st.runner.name}: aggregation failed: {exc}"))
        return combine(parts, body)

    @staticmethod
    def _body_part(states: Sequence[_ModelState], header: str) -> BodyPartCall | None:
        for st in states:
            if st.runner.model.manifest.kind == "body_part" and st.scores and not st.error:
                try:
                    return body_part_call(st.runner.model, st.scores, header)
                except Exception as exc:
                    log.warning("triage: body-part call failed: %s", exc)
        return None


def _score(runner: Runner, ds: Any, uid: str, frames: F32) -> tuple[list[SliceScores], list[str]]:
    """The frames' scores, leaving out (with their reasons) the frames the gate rules out."""
    gate = runner.model.manifest.gate
    reasons = [pixel_reason(gate, f) for f in frames]
    keep = [i for i, r in enumerate(reasons) if r is None]
    if not keep:
        return [], [r for r in reasons if r]
    inputs = model_input(frames[keep], runner.model, getattr(ds, "Modality", "") == "CT")
    scores = infer_slices(runner, [inputs])
    return [SliceScores(uid, s, i) for i, s in zip(keep, scores, strict=True)], [
        r for r in reasons if r
    ]


def _called(part: str | None, body: BodyPartCall | None) -> bool:
    return bool(part and body and body.predicted.upper() == part.upper())


def _confident_parts(model: Model, scores: Sequence[SliceScores]) -> set[str]:
    labels, floor = model.manifest.outputs.labels, model.manifest.min_confidence
    return {
        labels[int(np.argmax(s.scores))].upper() for s in scores if float(s.scores.max()) >= floor
    }


def _model_triage(st: _ModelState, body: BodyPartCall | None) -> Triage:
    """One triage model's part: unavailable, not applicable (with the reason), or its findings."""
    gate = st.runner.model.manifest.gate
    if st.error:
        return unavailable([st.tag], st.error)
    if not st.scores:
        reason, count = st.gated.most_common(1)[0] if st.gated else ("no image scored", 0)
        return not_applicable([st.tag], f"{st.runner.name}: not applicable: {reason} "
                                        f"({count} image(s))")  # fmt: skip
    if veto := body_part_reason(gate, body):
        return not_applicable([st.tag], f"{st.runner.name}: not applicable: {veto}")
    triage = series_triage(st.runner.model, st.scores, st.runner.mode)
    if not st.by_tags:
        note = f"{st.runner.name}: applied by the body-part model (the tags do not say {gate.body_part})"
        triage = Triage(triage.priority, triage.findings, status=triage.status,
                        reasons=(*triage.reasons, note), models=triage.models)  # fmt: skip
    if st.gated:
        left_out = sum(st.gated.values())
        reason = st.gated.most_common(1)[0][0]
        note = f"{st.runner.name}: {left_out} image(s) not scored ({reason})"
        triage = Triage(triage.priority, triage.findings, status=triage.status,
                        reasons=(*triage.reasons, note), models=triage.models)  # fmt: skip
    return triage


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
