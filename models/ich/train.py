"""Train, export and measure the ICH triage model (synthetic data; NOT for clinical use).

    PYTHONPATH=. python models/ich/train.py            # from the repository root

Writes models/ich/model.onnx, manifest.yaml (with its sha256) and metrics.json. The seed is
fixed; the whole run takes a few minutes on two CPU cores. Torch and onnx are needed here
only (``pip install torch==2.13.0 onnx``); the agent runs the ONNX file with onnxruntime.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from pydicom import dcmread
from pydicom.data import get_testdata_file
from torch import nn

from agent.triage.preprocess import prepare
from models import training
from models.phantoms import LESION_KINDS, head_slice, insert_lesion

HERE = Path(__file__).resolve().parent
SEED = 20240601
SIZE = (64, 64)
WINDOWS = ((40.0, 80.0), (80.0, 200.0), (40.0, 380.0))  # brain, subdural, soft tissue
REAL_HEADS = ("693_UNCI.dcm", "J2K_pixelrep_mismatch.dcm")  # pydicom test data: real head CT
N_TRAIN, N_VAL, N_TEST, N_REAL = 3600, 800, 1500, 400
EPOCHS = 18


def prep(hu: np.ndarray) -> np.ndarray:
    return prepare(hu, SIZE, crop="pad_square", wins=WINDOWS, fill=-1024.0)


def synthetic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
    xs, ys, kinds = [], [], []
    for i in range(n):
        kind = str(rng.choice(LESION_KINDS)) if i % 2 else ""
        xs.append(prep(head_slice(rng, kind or None)))
        ys.append(1.0 if kind else 0.0)
        kinds.append(kind or "none")
    return np.stack(xs), np.array(ys, np.float32)[:, None], kinds


def real_hu(name: str) -> tuple[np.ndarray, float]:
    ds = dcmread(get_testdata_file(name, download=False))
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return np.clip(hu, -1024, 3071), float(ds.PixelSpacing[0])


def real(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Real head slices, shifted and flipped, half with an inserted hyperdense blob."""
    heads = [real_hu(name) for name in REAL_HEADS]
    xs, ys = [], []
    for i in range(n):
        hu, mm = heads[i % len(heads)]
        hu = np.roll(hu, tuple(rng.integers(-30, 30, 2)), axis=(0, 1))
        if rng.random() < 0.5:
            hu = hu[:, ::-1]
        positive = i % 4 >= 2
        if positive:
            hu = insert_lesion(np.ascontiguousarray(hu), rng, pixel_mm=mm)
        hu = hu + rng.normal(0, rng.uniform(0, 10), hu.shape).astype(np.float32)
        xs.append(prep(hu))
        ys.append(float(positive))
    return np.stack(xs), np.array(ys, np.float32)[:, None]


def augment(x: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(len(x)) < 0.5
    x = x.clone()
    x[flip] = x[flip].flip(-1)
    return x


def threshold_at_sensitivity(scores: np.ndarray, labels: np.ndarray, target: float) -> float:
    pos = np.sort(scores[labels.astype(bool)])
    return float(pos[int(np.floor((1 - target) * len(pos)))])


def threshold_at_specificity(scores: np.ndarray, labels: np.ndarray, target: float) -> float:
    neg = np.sort(scores[~labels.astype(bool)])
    return float(neg[min(len(neg) - 1, int(np.ceil(target * len(neg))))]) + 1e-6


def main() -> None:
    t0 = time.time()
    training.seed_everything(SEED)
    rng = np.random.default_rng(SEED)
    x_syn, y_syn, _ = synthetic(N_TRAIN, rng)
    x_real, y_real = real(N_REAL, rng)
    x_val, y_val, _ = synthetic(N_VAL, np.random.default_rng(SEED + 1))
    x_test, y_test, kinds = synthetic(N_TEST, np.random.default_rng(SEED + 2))
    x_rt, y_rt = real(200, np.random.default_rng(SEED + 3))
    print(f"data: {time.time() - t0:.1f} s")
    x_train = np.concatenate([x_syn, x_real])
    y_train = np.concatenate([y_syn, y_real])
    net = small_net()
    losses = training.train(net, x_train, y_train, nn.BCEWithLogitsLoss(), epochs=EPOCHS, lr=3e-3,
                            seed=SEED, augment=augment)  # fmt: skip
    onnx_path = HERE / "model.onnx"
    training.export(net, onnx_path, (3, *SIZE), nn.Sigmoid())
    diff = training.parity(net, nn.Sigmoid(), onnx_path, x_test[:256])
    val = training.run_onnx(onnx_path, x_val)[:, 0]
    urgent = threshold_at_sensitivity(val, y_val[:, 0], 0.95)
    stat = max(urgent, threshold_at_specificity(val, y_val[:, 0], 0.99))
    test = training.run_onnx(onnx_path, x_test)[:, 0]
    real_scores = training.run_onnx(onnx_path, x_rt)[:, 0]
    labels = y_test[:, 0]
    per_kind = {}
    for kind in (*LESION_KINDS, "none"):
        mask = np.array([k == kind for k in kinds])
        per_kind[kind] = {
            "n": int(mask.sum()),
            "flagged_at_urgent": float((test[mask] >= urgent).mean()),
        }
    sens_u, spec_u = training.sens_spec(test, labels, urgent)
    sens_s, spec_s = training.sens_spec(test, labels, stat)
    rs, rp = training.sens_spec(real_scores, y_rt[:, 0], urgent)
    metrics = {
        "seed": SEED, "epochs": EPOCHS, "losses": losses, "train_images": len(x_train),
        "onnx_torch_max_abs_diff": diff, "parameters": sum(p.numel() for p in net.parameters()),
        "thresholds": {"urgent": urgent, "stat": stat},
        "test_synthetic": {"n": len(test), "positives": int(labels.sum()),
                           "auc": training.auc(test, labels),
                           "urgent": {"sensitivity": sens_u, "specificity": spec_u},
                           "stat": {"sensitivity": sens_s, "specificity": spec_s},
                           "per_kind": per_kind},
        "real_background_not_held_out": {"n": len(real_scores),
                                         "auc": training.auc(real_scores, y_rt[:, 0]),
                                         "urgent": {"sensitivity": rs, "specificity": rp}},
        "train_seconds": time.time() - t0,
    }  # fmt: skip
    training.write_json(HERE / "metrics.json", metrics)
    write_manifest(training.sha256(onnx_path), urgent, stat)
    print(metrics)


def small_net() -> nn.Module:
    return training.small_cnn(3, 1, widths=(16, 32, 48, 64))


def write_manifest(digest: str, urgent: float, stat: float) -> None:
    text = (HERE / "manifest.template.yaml").read_text()
    text = text.replace("@SHA256@", digest)
    text = text.replace("@URGENT@", f"{urgent:.4f}").replace("@STAT@", f"{stat:.4f}")
    (HERE / "manifest.yaml").write_text(text)


if __name__ == "__main__":
    main()
