"""Train, export and calibrate the ICH triage model (synthetic + package data; NOT for clinical use).

    NUMBA_CACHE_DIR=/root/.numba_cache PYTHONPATH=. python models/ich/train.py   # repo root
    ... models/ich/train.py --calibrate   # thresholds only, for the model.onnx already here

Writes models/ich/model.onnx, manifest.yaml (from manifest.template.yaml, with its sha256 and
thresholds) and metrics.json. Seeds are fixed; about 12 minutes on two CPU cores. Torch and
onnx are needed here only (``pip install torch==2.13.0 onnx``); the agent runs the ONNX file
with onnxruntime. Thresholds are set on validation SERIES scored the way the agent scores
them: each slice through the exported ONNX file, then the manifest's aggregation.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models import training
from models.ich.data import (
    legacy_slices,
    make_series,
    prep,
    real_slices,
    training_slices,
)
from models.phantoms import ICH_KINDS, Acquisition

HERE = Path(__file__).resolve().parent
SEED = 20240601
N_SYN, N_LEGACY, N_REAL = 9000, 1500, 1200  # training slices
N_VAL = 300  # validation series of each class (normal; bleed)
EPOCHS = 24
SPEC_URGENT, SPEC_STAT = 0.95, 0.99  # series specificity the thresholds are set at


def augment(x: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(len(x)) < 0.5
    x = x.clone()
    x[flip] = x[flip].flip(-1)
    return x


def threshold_at_specificity(neg: np.ndarray, target: float) -> float:
    """The lowest score that leaves at least ``target`` of ``neg`` below it."""
    ranked = np.sort(neg)
    return float(ranked[min(len(ranked) - 1, int(np.ceil(target * len(ranked))) - 1)]) + 1e-4


def aggregation() -> tuple[str, int]:
    doc = yaml.safe_load((HERE / "manifest.template.yaml").read_text().replace("@", ""))
    return doc["aggregation"]["method"], int(doc["aggregation"].get("k", 1))


def series_scores(onnx_path: Path, rng: np.random.Generator, acq: Acquisition, n: int):
    """Series scores of ``n`` normal and ``n`` bleed series, with their bleed's kind and size."""
    method, k = aggregation()
    assert method in ("max", "top_k_mean"), "validation implements max and top_k_mean"
    k = 1 if method == "max" else k
    rows = []
    for i in range(2 * n):
        kind = str(ICH_KINDS[i % len(ICH_KINDS)]) if i >= n else None
        s = make_series(rng, acq, int(rng.integers(8, 17)), kind)
        scores = training.run_onnx(onnx_path, np.stack([prep(x) for x in s.slices]))[:, 0]
        top = float(np.sort(scores)[::-1][:k].mean())
        rows.append((top, kind or "none", s.bleed.size_mm if s.bleed else 0.0, s.calcified))
    return rows


def main(calibrate_only: bool = False) -> None:
    """Train, export and calibrate; ``--calibrate``: only re-set the thresholds of the
    model.onnx already here (after a change of the template's aggregation)."""
    t0 = time.time()
    onnx_path = HERE / "model.onnx"
    if calibrate_only:
        old = json.loads((HERE / "metrics.json").read_text())
        losses, diff, n_params = old["losses"], old["onnx_torch_max_abs_diff"], old["parameters"]
        train_s = old["train_seconds"]
    else:
        losses, diff, n_params = train_and_export(onnx_path)
        train_s = round(time.time() - t0, 1)
    rows = series_scores(onnx_path, np.random.default_rng(SEED + 1), Acquisition(), N_VAL)
    scores = np.array([r[0] for r in rows])
    positive = np.array([r[1] != "none" for r in rows])
    urgent = threshold_at_specificity(scores[~positive], SPEC_URGENT)
    stat = max(urgent, threshold_at_specificity(scores[~positive], SPEC_STAT))
    big = np.array([r[2] >= 5 for r in rows]) & positive
    val = {
        "series": len(rows), "normal": int((~positive).sum()), "bleed": int(positive.sum()),
        "auc": training.auc(scores, positive),
        "urgent": {"specificity": float((scores[~positive] < urgent).mean()),
                   "sensitivity": float((scores[positive] >= urgent).mean()),
                   "sensitivity_5mm_plus": float((scores[big] >= urgent).mean())},
        "stat": {"specificity": float((scores[~positive] < stat).mean()),
                 "sensitivity": float((scores[positive] >= stat).mean()),
                 "sensitivity_5mm_plus": float((scores[big] >= stat).mean())},
        "flagged_urgent_by_kind": {
            kind: float((scores[[r[1] == kind for r in rows]] >= urgent).mean())
            for kind in (*ICH_KINDS, "none")},
    }  # fmt: skip
    metrics = {
        "version": "0.3.0", "seed": SEED, "epochs": EPOCHS, "losses": losses,
        "train_slices": {"synthetic": N_SYN, "legacy_synthetic": N_LEGACY, "real": N_REAL},
        "onnx_torch_max_abs_diff": diff, "parameters": n_params,
        "thresholds": {"urgent": urgent, "stat": stat, "aggregation": "{} k={}".format(*aggregation()),
                       "set_at_series_specificity": [SPEC_URGENT, SPEC_STAT]},
        "validation_series": val, "train_seconds": train_s,
        "held_out": "benchmarks/json/eval_triage.json (benchmarks/eval_triage.py)",
    }  # fmt: skip
    training.write_json(HERE / "metrics.json", metrics)
    write_manifest(training.sha256(onnx_path), urgent, stat)
    print({k: v for k, v in metrics.items() if k != "losses"})


def train_and_export(onnx_path: Path) -> tuple[list[float], float, int]:
    t0 = time.time()
    training.seed_everything(SEED)
    rng = np.random.default_rng(SEED)
    parts = [training_slices(N_SYN, rng), legacy_slices(N_LEGACY, rng), real_slices(N_REAL, rng)]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    print(f"data: {len(x_train)} slices in {time.time() - t0:.1f} s", flush=True)
    net = training.small_cnn(3, 1, widths=(24, 48, 64, 96))
    losses = training.train(net, x_train, y_train, nn.BCEWithLogitsLoss(), epochs=EPOCHS,
                            lr=4e-3, batch=128, seed=SEED, augment=augment)  # fmt: skip
    training.export(net, onnx_path, (3, 64, 64), nn.Sigmoid())
    diff = training.parity(net, nn.Sigmoid(), onnx_path, x_train[:256])
    return losses, diff, sum(p.numel() for p in net.parameters())


def write_manifest(digest: str, urgent: float, stat: float) -> None:
    text = (HERE / "manifest.template.yaml").read_text()
    text = text.replace("@SHA256@", digest)
    text = text.replace("@URGENT@", f"{urgent:.4f}").replace("@STAT@", f"{stat:.4f}")
    (HERE / "manifest.yaml").write_text(text)


if __name__ == "__main__":
    main(calibrate_only="--calibrate" in sys.argv[1:])
