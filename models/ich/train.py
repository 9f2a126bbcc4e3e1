"""Train, export and calibrate the ICH triage model (synthetic + package data; NOT for clinical use).

    NUMBA_CACHE_DIR=/root/.numba_cache PYTHONPATH=. python models/ich/train.py   # repo root
    ... models/ich/train.py --calibrate   # thresholds only (= models/ich/calibrate.py)
    ... models/ich/train.py --trial   # reduced set: 64x64 (v0.3 net) against 128x128 (v0.4)

Writes models/ich/model.onnx, manifest.yaml (from manifest.template.yaml, with its sha256 and
thresholds) and metrics.json. Seeds are fixed; 25-45 minutes on two shared CPU cores. Torch and
onnx are needed here only (``pip install torch==2.13.0 onnx``); the agent runs the ONNX file
with onnxruntime. Thresholds are set by ``calibrate.py`` on two validation splits of SERIES
(the v0.3 validation generator, and one with training's own wide ranges), scored the way the
agent scores them: each slice through the exported ONNX file, then the manifest's aggregation.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as tf
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models import training
from models.ich import calibrate
from models.ich.data import (
    SIZE,
    WINDOWS,
    hu_input,
    legacy_slices,
    prep,
    real_slices,
    training_slices,
)
from models.phantoms import ScanHead

HERE = Path(__file__).resolve().parent
SEED = 20240601
VERSION = "0.4.0"
N_SYN, N_LEGACY, N_REAL = 13000, 1500, 1500  # training slices
EPOCHS = 14
WIDTHS = (24, 48, 80, 128)  # stem at 64x64, max pool to 32x32, then 32, 16, 8


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


def main(calibrate_only: bool = False) -> None:
    """Train, export and calibrate (``calibrate.py``); ``--calibrate``: only re-set the
    thresholds of the model.onnx already here (same as ``python models/ich/calibrate.py``)."""
    if calibrate_only:
        calibrate.main()
        return
    t0 = time.time()
    onnx_path = HERE / "model.onnx"
    x, y = training_data(SEED, N_SYN, N_LEGACY, N_REAL)
    losses, diff, n_params = train_and_export(onnx_path, x, y, WIDTHS, EPOCHS)
    metrics = {
        "version": VERSION, "seed": SEED, "epochs": EPOCHS, "losses": losses,
        "input": [3, *SIZE], "widths": list(WIDTHS),
        "train_slices": {"synthetic": N_SYN, "legacy_synthetic": N_LEGACY, "real": N_REAL},
        "onnx_torch_max_abs_diff": diff, "parameters": n_params,
        "train_seconds": round(time.time() - t0, 1),
        "held_out": "benchmarks/eval/eval_triage.json (benchmarks/eval_triage.py)",
    }  # fmt: skip
    training.write_json(HERE / "metrics.json", metrics)
    calibrate.main()


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
    rows = calibrate.series_scores(out / "128.onnx", np.random.default_rng(SEED + 1), 100,
                                   others=((out / "64.onnx", (64, 64)),))  # fmt: skip
    for i, name in enumerate(("128", "64")):
        scores = np.array([[r["score"], *r["others"]][i] for r in rows])
        print(
            f"trial {name}:",
            calibrate.summary(scores, rows, *calibrate.own_thresholds(scores, rows)),
        )


if __name__ == "__main__":
    if "--trial" in sys.argv[1:]:
        trial()
    else:
        main(calibrate_only="--calibrate" in sys.argv[1:])
