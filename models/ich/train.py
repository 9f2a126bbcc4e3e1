"""Train, export and calibrate the ICH triage model (synthetic + package data; NOT for clinical use).

    NUMBA_CACHE_DIR=/root/.numba_cache PYTHONPATH=. python models/ich/train.py   # repo root
    ... models/ich/train.py --calibrate   # thresholds only, for the model.onnx already here
    ... models/ich/train.py --trial   # reduced set: 64x64 (v0.3 net) against 128x128 (v0.4)

Writes models/ich/model.onnx, manifest.yaml (from manifest.template.yaml, with its sha256 and
thresholds) and metrics.json. Seeds are fixed; 25-45 minutes on two shared CPU cores. Torch and
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
import torch.nn.functional as tf
import yaml
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.triage.preprocess import prepare
from models import training
from models.ich.data import (
    SIZE,
    WINDOWS,
    hu_input,
    legacy_slices,
    make_series,
    prep,
    real_slices,
    training_slices,
)
from models.phantoms import ICH_KINDS, Acquisition, ScanHead

HERE = Path(__file__).resolve().parent
SEED = 20240601
VERSION = "0.4.0"
N_SYN, N_LEGACY, N_REAL = 13000, 1500, 1500  # training slices
N_VAL = 300  # validation series of each class (normal; bleed)
EPOCHS = 14
WIDTHS = (24, 48, 80, 128)  # stem at 64x64, max pool to 32x32, then 32, 16, 8
SPEC_URGENT, SPEC_STAT = 0.95, 0.99  # series specificity the thresholds are set at


def windows_t(hu: torch.Tensor) -> torch.Tensor:
    """``agent.triage.preprocess.windows`` for a batch (B, H, W) in HU: (B, 3, H, W)."""
    return torch.stack([((hu - (c - w / 2)) / w).clamp(0, 1) for c, w in WINDOWS], dim=1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable 5-tap Gaussian of a batch (B, H, W), edges replicated (shifted sums: a
    one-channel conv2d is slow on the CPU)."""
    t = torch.arange(-2, 3, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    h, w = x.shape[-2:]
    p = tf.pad(x[:, None], (2, 2, 0, 0), mode="replicate")[:, 0]
    y = sum(k[i] * p[..., i : i + w] for i in range(5))
    p = tf.pad(y[:, None], (0, 0, 2, 2), mode="replicate")[:, 0]
    return sum(k[i] * p[..., i : i + h, :] for i in range(5))  # type: ignore[return-value]


class Augment:
    """Per batch, in HU: left-right flip; a softer (30%) or sharper (20%) kernel; extra
    correlated noise up to 2 HU; a calibration offset of +-3 HU; then the windows (after a
    block mean by ``pool`` for the 64x64 trial)."""

    def __init__(self, seed: int, pool: int = 1) -> None:
        self.gen, self.pool = torch.Generator().manual_seed(seed), pool

    def __call__(self, hu: torch.Tensor) -> torch.Tensor:
        g, x = self.gen, hu.float()
        b = len(x)
        r = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
        flip = r(b) < 0.5
        x[flip] = x[flip].flip(-1)
        kernel, amount = r(b)[:, None, None], r(b, 1, 1)
        detail = x - _blur(x, 0.5 + float(r(1)))
        x = x - amount * detail * (kernel < 0.3) + amount * detail * (kernel > 0.8)
        white = torch.randn(x.shape, generator=g)
        x = x + 2.0 * r(b, 1, 1) * (0.6 * white + 1.2 * _blur(white, 0.8))
        x = x + (r(b, 1, 1) * 6 - 3)
        if self.pool > 1:
            x = tf.avg_pool2d(x[:, None], self.pool)[:, 0]
        return windows_t(x)


def threshold_at_specificity(neg: np.ndarray, target: float) -> float:
    """The lowest score that leaves at least ``target`` of ``neg`` below it."""
    ranked = np.sort(neg)
    return float(ranked[min(len(ranked) - 1, int(np.ceil(target * len(ranked))) - 1)]) + 1e-4


def aggregation() -> tuple[str, int]:
    doc = yaml.safe_load((HERE / "manifest.template.yaml").read_text().replace("@", ""))
    return doc["aggregation"]["method"], int(doc["aggregation"].get("k", 1))


def series_scores(onnx_path: Path, rng: np.random.Generator, acq: Acquisition, n: int,
                  others: tuple[tuple[Path, tuple[int, int]], ...] = ()) -> list[tuple]:  # fmt: skip
    """Series scores of ``n`` normal and ``n`` bleed series, with their bleed's kind and size
    (``others``: more models, each with its input size, scored on the same series)."""
    method, k = aggregation()
    assert method in ("max", "top_k_mean"), "validation implements max and top_k_mean"
    k = 1 if method == "max" else k
    rows = []
    for i in range(2 * n):
        kind = str(ICH_KINDS[i % len(ICH_KINDS)]) if i >= n else None
        s = make_series(rng, acq, int(rng.integers(8, 17)), kind)
        tops = []
        for path, size in ((onnx_path, SIZE), *others):
            x = np.stack([prepare(x, size, crop="pad_square", wins=WINDOWS, fill=-1024.0)
                          for x in s.slices])  # fmt: skip
            tops.append(float(np.sort(training.run_onnx(path, x)[:, 0])[::-1][:k].mean()))
        rows.append((*tops, kind or "none", s.bleed.size_mm if s.bleed else 0.0, s.calcified))
        if (i + 1) % 100 == 0:
            print(f"  validation: {i + 1}/{2 * n} series", flush=True)
    return rows


def validation_summary(scores: np.ndarray, rows: list[tuple]) -> dict[str, object]:
    """AUC and the two operating points (set on these same series) of one model's scores."""
    positive = np.array([r[-3] != "none" for r in rows])
    big = np.array([r[-2] >= 5 for r in rows]) & positive
    urgent = threshold_at_specificity(scores[~positive], SPEC_URGENT)
    stat = max(urgent, threshold_at_specificity(scores[~positive], SPEC_STAT))
    point = lambda t: {"threshold": t, "specificity": float((scores[~positive] < t).mean()),  # noqa: E731
                       "sensitivity": float((scores[positive] >= t).mean()),
                       "sensitivity_5mm_plus": float((scores[big] >= t).mean())}  # fmt: skip
    return {"series": len(rows), "normal": int((~positive).sum()), "bleed": int(positive.sum()),
            "auc": training.auc(scores, positive), "urgent": point(urgent), "stat": point(stat),
            "flagged_urgent_by_kind": {
                kind: float((scores[[r[-3] == kind for r in rows]] >= urgent).mean())
                for kind in (*ICH_KINDS, "none")}}  # fmt: skip


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
        x, y = training_data(SEED, N_SYN, N_LEGACY, N_REAL)
        losses, diff, n_params = train_and_export(onnx_path, x, y, WIDTHS, EPOCHS)
        train_s = round(time.time() - t0, 1)
    rows = series_scores(onnx_path, np.random.default_rng(SEED + 1), Acquisition(), N_VAL)
    val = validation_summary(np.array([r[0] for r in rows]), rows)
    urgent, stat = val["urgent"]["threshold"], val["stat"]["threshold"]  # type: ignore[index]
    metrics = {
        "version": VERSION, "seed": SEED, "epochs": EPOCHS, "losses": losses,
        "input": [3, *SIZE], "widths": list(WIDTHS),
        "train_slices": {"synthetic": N_SYN, "legacy_synthetic": N_LEGACY, "real": N_REAL},
        "onnx_torch_max_abs_diff": diff, "parameters": n_params,
        "thresholds": {"urgent": urgent, "stat": stat, "aggregation": "{} k={}".format(*aggregation()),
                       "set_at_series_specificity": [SPEC_URGENT, SPEC_STAT]},
        "validation_series": val, "train_seconds": train_s,
        "held_out": "benchmarks/eval/eval_triage.json (benchmarks/eval_triage.py)",
    }  # fmt: skip
    training.write_json(HERE / "metrics.json", metrics)
    write_manifest(training.sha256(onnx_path), urgent, stat)
    print({k: v for k, v in metrics.items() if k != "losses"})


def training_data(
    seed: int, n_syn: int, n_legacy: int, n_real: int
) -> tuple[np.ndarray, np.ndarray]:
    """Training slices in HU at the input size (float16), and their labels; checks that the
    per-batch windowing equals the agent's preprocessing."""
    t0 = time.time()
    training.seed_everything(seed)
    rng = np.random.default_rng(seed)
    parts = [training_slices(n_syn, rng), legacy_slices(n_legacy, rng), real_slices(n_real, rng)]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    check = [ScanHead(rng).render(0.5) for _ in range(8)]
    got = windows_t(torch.from_numpy(np.stack([hu_input(c) for c in check])).float()).numpy()
    gap = float(np.abs(got - np.stack([prep(c) for c in check])).max())
    assert gap < 2e-3, f"training input differs from the agent's preprocessing by {gap}"
    print(
        f"data: {len(x)} slices in {time.time() - t0:.1f} s (windowing gap {gap:.1e})", flush=True
    )
    return x, y


def train_and_export(onnx_path: Path, x: np.ndarray, y: np.ndarray, widths: tuple[int, ...],
                     epochs: int, pool: int = 1) -> tuple[list[float], float, int]:  # fmt: skip
    """``pool`` 2: the v0.3 network on 64x64 (the trial's baseline); 1: v0.4's on 128x128."""
    training.seed_everything(SEED)
    net = training.small_cnn(3, 1, widths=widths, stem_pool=pool == 1)
    losses = training.train(net, x, y, nn.BCEWithLogitsLoss(), epochs=epochs, lr=4e-3,
                            batch=128, seed=SEED, augment=Augment(SEED, pool))  # fmt: skip
    side = SIZE[0] // pool
    training.export(net, onnx_path, (3, side, side), nn.Sigmoid())
    sample = torch.from_numpy(x[:256]).float()
    sample = tf.avg_pool2d(sample[:, None], pool)[:, 0] if pool > 1 else sample
    diff = training.parity(net, nn.Sigmoid(), onnx_path, windows_t(sample).numpy())
    return losses, diff, sum(p.numel() for p in net.parameters())


def trial() -> None:
    """The choice made before the full run: on a reduced set (3,200 + 400 + 400 slices, 6
    epochs, 200 validation series), the v0.3 network at 64x64 against v0.4's at 128x128."""
    x, y = training_data(SEED, 3200, 400, 400)
    out = Path("/tmp/ich_trial")
    out.mkdir(exist_ok=True)
    for name, widths, pool in (("64", (24, 48, 64, 96), 2), ("128", WIDTHS, 1)):
        t0 = time.time()
        train_and_export(out / f"{name}.onnx", x, y, widths, 6, pool)
        print(f"trial {name}: trained in {time.time() - t0:.0f} s", flush=True)
    rows = series_scores(out / "128.onnx", np.random.default_rng(SEED + 1), Acquisition(), 100,
                         ((out / "64.onnx", (64, 64)),))  # fmt: skip
    for i, name in enumerate(("128", "64")):
        print(f"trial {name}:", validation_summary(np.array([r[i] for r in rows]), rows))


def write_manifest(digest: str, urgent: float, stat: float) -> None:
    text = (HERE / "manifest.template.yaml").read_text()
    text = text.replace("@SHA256@", digest)
    text = text.replace("@URGENT@", f"{urgent:.4f}").replace("@STAT@", f"{stat:.4f}")
    (HERE / "manifest.yaml").write_text(text)


if __name__ == "__main__":
    if "--trial" in sys.argv[1:]:
        trial()
    else:
        main(calibrate_only="--calibrate" in sys.argv[1:])
