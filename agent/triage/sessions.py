"""ONNX Runtime sessions for the triage models: provider choice, options, the saved graph.

Session options follow ONNX Runtime's advice for a box shared with other work: a fixed
number of intra-op threads (``triage.threads``), one inter-op thread, no spin-waiting, no
CPU memory arena, and the graph optimised once and saved to the cache (later starts load
the saved graph with optimisation off). ``device: cuda`` without CUDA falls back to the CPU
with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.config import TriageConfig
from agent.domain.verdicts import ModelMode
from agent.errors import ModelError
from agent.triage.models import Model

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
BATCH = 32  # slices per session.run in infer_slices


@dataclass
class Runner:
    """A verified model with its ONNX Runtime session."""

    model: Model
    session: Any  # onnxruntime.InferenceSession
    provider: str
    mode: ModelMode = "active"

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
        runner = _open(model, cfg.threads, cache_dir, providers)
    except Exception as exc:
        if providers == [CPU]:
            raise ModelError(str(model.folder), [f"onnxruntime cannot open it: {exc}"]) from exc
        log.warning("triage: %s on %s failed (%s); using the CPU", model.name, providers[0], exc)
        runner = _open(model, cfg.threads, cache_dir, [CPU])
    runner.mode = cfg.mode_of(model.name)
    return runner


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
