"""Shared training helpers for the shipped models (torch; never imported by the agent).

Run a model's ``train.py`` from the repository root with ``PYTHONPATH=.``; it needs the
``train`` extra: ``pip install torch==2.13.0 onnx`` (the CPU wheel is enough).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

Array = np.ndarray


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(2)


def small_cnn(in_ch: int, n_out: int, widths: tuple[int, ...] = (16, 32, 64, 64),
              stem_pool: bool = False) -> nn.Module:  # fmt: skip
    """A strided 5x5 stem, conv-BN-ReLU-pool blocks, then global average and max pooling and
    one linear layer (cheap enough to train on two CPU cores in minutes). ``stem_pool``: a
    2x2 max pool after the stem, so a larger input costs little more (the stem still sees
    every input pixel; the max keeps a small focus it responds to)."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, widths[0], 5, stride=2, padding=2, bias=False),
                               nn.BatchNorm2d(widths[0]), nn.ReLU()]  # fmt: skip
    if stem_pool:
        layers.append(nn.MaxPool2d(2))
    prev = widths[0]
    for w in widths[1:]:
        layers += [nn.Conv2d(prev, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                   nn.MaxPool2d(2)]  # fmt: skip
        prev = w

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(2 * prev, n_out)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.features(x)
            pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
            out: torch.Tensor = self.head(pooled)
            return out

    return Net()


def train(
    net: nn.Module,
    x: Array,
    y: Array,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[float]:
    """Adam with a one-cycle schedule; returns the mean loss of each epoch."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        xb = xt[idx] if augment is None else augment(xt[idx])
        return loss_fn(net(xb), yt[idx])

    return fit(net, len(x), batch_loss, epochs=epochs, batch=batch, lr=lr, seed=seed)


def fit(
    net: nn.Module,
    n: int,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
) -> list[float]:
    """AdamW with a one-cycle schedule over ``n`` samples in a seeded random order;
    ``batch_loss(indices)`` is one batch's loss. Returns the mean loss of each epoch."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((n + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    losses = []
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(n, generator=gen)
        total, t0 = 0.0, time.time()
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            loss = batch_loss(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / n)
        print(f"epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f} ({time.time() - t0:.1f} s)",
              flush=True)  # fmt: skip
    net.eval()
    return losses


def export(net: nn.Module, path: Path, shape: tuple[int, ...], final: nn.Module) -> None:
    """ONNX export with a dynamic batch axis, input ``image``, output ``scores``."""
    model = nn.Sequential(net, final).eval()
    torch.onnx.export(
        model, (torch.zeros(1, *shape),), str(path), input_names=["image"],
        output_names=["scores"], dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}},
        opset_version=17, dynamo=False,
    )  # fmt: skip
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def parity(net: nn.Module, final: nn.Module, path: Path, x: Array) -> float:
    """Largest absolute difference between torch and onnxruntime on ``x``."""
    with torch.no_grad():
        ref = nn.Sequential(net, final).eval()(torch.from_numpy(x)).numpy()
    got = run_onnx(path, x)
    return float(np.abs(ref - got).max())


def run_onnx(path: Path, x: Array, batch: int = 256) -> Array:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {"image": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs)


def auc(scores: Array, labels: Array) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) statistic, ties counted half."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def sens_spec(scores: Array, labels: Array, threshold: float) -> tuple[float, float]:
    pred, labels = scores >= threshold, labels.astype(bool)
    return float(pred[labels].mean()), float((~pred[~labels]).mean())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
