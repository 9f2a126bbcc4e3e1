"""Train, export and measure the CT body-part classifier (synthetic phantoms + 3 real slices).

    PYTHONPATH=. python models/bodypart/train.py       # from the repository root

Writes models/bodypart/model.onnx, manifest.yaml (with its sha256) and metrics.json, with a
fixed seed. Needs ``pip install torch==2.13.0 onnx``; the agent needs neither.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from torch import nn

from agent.triage.preprocess import prepare
from models import training
from models.phantoms import LESION_KINDS, body_slice, head_slice

HERE = Path(__file__).resolve().parent
SEED = 20240602
SIZE = (64, 64)
WINDOWS = ((40.0, 400.0), (-600.0, 1500.0), (400.0, 1800.0))  # soft tissue, lung, bone
LABELS = ("HEAD", "CHEST", "ABDOMEN", "PELVIS")
REAL = {
    "693_UNCI.dcm": "HEAD",
    "J2K_pixelrep_mismatch.dcm": "HEAD",
    "explicit_VR-UN.dcm": "ABDOMEN",
}
N_TRAIN, N_TEST, N_REAL, EPOCHS = 3200, 800, 300, 4


def prep(hu: np.ndarray) -> np.ndarray:
    return prepare(hu, SIZE, crop="pad_square", wins=WINDOWS, fill=-1024.0)


def synthetic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i in range(n):
        label = i % len(LABELS)
        if LABELS[label] == "HEAD":
            lesion = str(rng.choice(LESION_KINDS)) if rng.random() < 0.3 else None
            hu = head_slice(rng, lesion)
        else:
            hu = body_slice(rng, LABELS[label])
        xs.append(prep(hu))
        ys.append(label)
    return np.stack(xs), np.array(ys, np.int64)


def real(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    images = []
    for name, label in REAL.items():
        ds = dcmread(get_testdata_file(name, download=False))
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        images.append((np.clip(hu, -1024, 3071), LABELS.index(label)))
    xs, ys = [], []
    for i in range(n):
        hu, label = images[i % len(images)]
        hu = np.roll(hu, tuple(rng.integers(-40, 40, 2)), axis=(0, 1))
        hu = hu[:, ::-1] if rng.random() < 0.5 else hu
        xs.append(prep(hu + rng.normal(0, rng.uniform(0, 15), hu.shape).astype(np.float32)))
        ys.append(label)
    return np.stack(xs), np.array(ys, np.int64)


def main() -> None:
    t0 = time.time()
    training.seed_everything(SEED)
    rng = np.random.default_rng(SEED)
    x_syn, y_syn = synthetic(N_TRAIN, rng)
    x_real, y_real = real(N_REAL, rng)
    x_test, y_test = synthetic(N_TEST, np.random.default_rng(SEED + 1))
    print(f"data: {time.time() - t0:.1f} s")
    net = training.small_cnn(3, len(LABELS), widths=(8, 16, 32, 32))
    x, y = np.concatenate([x_syn, x_real]), np.concatenate([y_syn, y_real])
    losses = training.train(net, x, y, nn.CrossEntropyLoss(), epochs=EPOCHS, seed=SEED)
    path = HERE / "model.onnx"
    training.export(net, path, (3, *SIZE), nn.Softmax(dim=1))
    diff = training.parity(net, nn.Softmax(dim=1), path, x_test[:256])
    pred = training.run_onnx(path, x_test).argmax(axis=1)
    confusion = np.zeros((len(LABELS), len(LABELS)), int)
    for t, p in zip(y_test, pred, strict=True):
        confusion[t, p] += 1
    real_calls = {}
    for name, label in {**REAL, "CT_small.dcm": "?", "bad_sequence.dcm": "?"}.items():
        ds = dcmread(get_testdata_file(name, download=False))
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        probs = training.run_onnx(path, prep(np.clip(hu, -1024, 3071))[None])[0]
        real_calls[name] = {
            "truth": label,
            "in_training": label != "?",
            "predicted": LABELS[int(probs.argmax())],
            "score": float(probs.max()),
        }
    metrics = {
        "seed": SEED, "epochs": EPOCHS, "losses": losses, "train_images": len(x),
        "parameters": sum(p.numel() for p in net.parameters()), "onnx_torch_max_abs_diff": diff,
        "test_synthetic": {"n": len(y_test), "accuracy": float((pred == y_test).mean()),
                           "labels": LABELS, "confusion_rows_truth": confusion.tolist()},
        "real_files": real_calls, "train_seconds": time.time() - t0,
    }  # fmt: skip
    training.write_json(HERE / "metrics.json", metrics)
    text = (HERE / "manifest.template.yaml").read_text().replace("@SHA256@", training.sha256(path))
    (HERE / "manifest.yaml").write_text(text)
    print(metrics)


if __name__ == "__main__":
    main()
