"""The v0.5 ICH network: a small fully-convolutional net with a per-pixel bleed map (torch).

Dense supervision: the generator knows where each bleed is (``ScanHead.bleed_mask``), so the
network learns a 32x32 logit map (one cell per 4x4 input pixels, about 7 mm) with a pixel
loss against that mask, besides the slice loss. The slice score is a log-sum-exp pooling of
the map plus a learned bias; the exported ONNX graph returns only that sigmoid score, one
per input (output ``scores``, shape (batch, 1)), so the agent reads what it read from v0.4.

Used by ``train.py`` only; the agent never imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as tf
from torch import nn

from models.ich.data import UNKNOWN
from models.training import fit

WIDTHS = (24, 48, 80, 128)  # stem to 64x64, max pool to 32x32, then 32, 16, 8 (as v0.4)
FPN = 32  # channels of the top-down path
PIX_POS_WEIGHT = 10.0  # bleed cells are rare (about 0.5% of a positive slice)
PIX_LOSS, DICE_LOSS = 2.0, 0.5  # weights beside the slice BCE


def _block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation,
                                   bias=False), nn.BatchNorm2d(cout), nn.ReLU())  # fmt: skip


class SegNet(nn.Module):
    """Encoder as v0.4's CNN (strided 5x5 stem, 2x2 max pool, conv blocks at 32, 16, 8), one
    dilated block at 8x8 for context, then a feature-pyramid top-down path to a 32x32 logit
    map. ``forward``: the slice logit (B, 1); ``both``: slice logit and map (B, 1, 32, 32)."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS, fpn: int = FPN) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 5, stride=2, padding=2, bias=False),
                                  nn.BatchNorm2d(w0), nn.ReLU(), nn.MaxPool2d(2))  # fmt: skip
        self.c32, self.c16 = _block(w0, w1), _block(w1, w2)
        self.c8 = nn.Sequential(_block(w2, w3), _block(w3, w3, dilation=2))
        self.lat32, self.lat16 = nn.Conv2d(w1, fpn, 1), nn.Conv2d(w2, fpn, 1)
        self.lat8 = nn.Conv2d(w3, fpn, 1)
        self.head = nn.Sequential(_block(fpn, fpn), nn.Conv2d(fpn, 1, 1))
        self.bias = nn.Parameter(torch.tensor(-math.log(32 * 32)))

    def both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f32 = self.c32(self.stem(x))
        f16 = self.c16(tf.max_pool2d(f32, 2))
        f8 = self.c8(tf.max_pool2d(f16, 2))
        p = self.lat16(f16) + tf.interpolate(self.lat8(f8), scale_factor=2.0, mode="nearest")
        p = self.lat32(f32) + tf.interpolate(p, scale_factor=2.0, mode="nearest")
        z = self.head(p)
        return torch.logsumexp(z.flatten(1), dim=1, keepdim=True) + self.bias, z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.both(x)[0]


def seg_loss(s: torch.Tensor, z: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Slice BCE + pixel BCE (cells with a known mask) + soft Dice on positive slices with a
    mask. ``s`` (B, 1) and ``y`` (B, 1); ``z`` (B, 1, 32, 32); ``m`` (B, 32, 32) uint8."""
    known = (m != UNKNOWN).float()[:, None]
    t = (m == 1).float()[:, None]
    slice_loss = tf.binary_cross_entropy_with_logits(s, y)
    pw = torch.tensor(PIX_POS_WEIGHT)
    pix = tf.binary_cross_entropy_with_logits(z, t, pos_weight=pw, reduction="none")
    pix = (pix * known).sum() / known.sum().clamp(min=1.0)
    p = torch.sigmoid(z) * known
    has = (t.flatten(1).sum(1) > 0).float()
    dice = 1 - (2 * (p * t).flatten(1).sum(1) + 1) / (p.flatten(1).sum(1) + t.flatten(1).sum(1) + 1)
    dice_loss = (dice * has).sum() / has.sum().clamp(min=1.0)
    return slice_loss + PIX_LOSS * pix + DICE_LOSS * dice_loss


Augment = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # windowed, flipped


def train(net: SegNet, x: np.ndarray, y: np.ndarray, m: np.ndarray, augment: Augment, *,
          epochs: int, batch: int = 128, lr: float = 4e-3, seed: int = 0) -> list[float]:  # fmt: skip
    """``models.training.fit`` (AdamW, one-cycle), the masks flipped with their slices;
    returns the mean loss of each epoch."""
    xt, yt, mt = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(m)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        xb, flip = augment(xt[idx])
        mb = mt[idx].clone()
        mb[flip] = mb[flip].flip(-1)
        s, z = net.both(xb)
        return seg_loss(s, z, yt[idx], mb)

    return fit(net, len(x), batch_loss, epochs=epochs, batch=batch, lr=lr, seed=seed)
