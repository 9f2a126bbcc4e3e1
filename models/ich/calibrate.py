"""Series-level calibration of the ICH model's ``urgent`` and ``stat`` thresholds (no torch).

    NUMBA_CACHE_DIR=/root/.numba_cache PYTHONPATH=. python models/ich/calibrate.py   # repo root

    ... models/ich/calibrate.py --onnx CANDIDATE.onnx --json OUT.json   # compare only

Re-sets the thresholds of the model.onnx already here (no retraining; ``train.py`` calls the
same code after training) and writes manifest.yaml (the sha256 is the file's, so it does not
change unless model.onnx does) and the calibration part of metrics.json. About 2 minutes on
two shared CPU cores.

Two validation splits, each 300 normal and 300 bleed series (60 per kind), 8-16 slices 4-8 mm
apart through one head, a bleed on 1-3 consecutive slices, scored the way the agent scores
them (each slice through the ONNX file with the agent's preprocessing, then the manifest's
aggregation):

- ``narrow`` (seed 20240602): ``Acquisition()``, the v0.3 validation generator unchanged;
- ``wide`` (seed 20240603): the TRAINING generator's ranges (``data.TRAINING``: field of view
  180-320 mm, noise 0.6-3.4 HU, head size x0.78-1.2, 30% small bleeds, thin slices included),
  and, as in training, a third of the series through a 192 or 384 scanner matrix.

Each threshold is the more conservative (higher) of the two splits' thresholds at the target
series specificity (urgent 0.95, stat 0.99), so the target holds on both. Nothing of the
held-out benchmark (``benchmarks/eval_triage.py``: its seed, its generator) is used here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.triage.preprocess import prepare
from models import training
from models.ich.data import (
    SIZE,
    TRAIN_MATRICES,
    TRAINING,
    WINDOWS,
    Series,
    at_matrix,
    make_series,
)
from models.phantoms import ICH_KINDS, Acquisition

HERE = Path(__file__).resolve().parent
SEED = 20240601  # training's; the splits use SEED + 1 (narrow) and SEED + 2 (wide)
N_VAL = 300  # validation series of each class (normal; bleed)
SPEC_URGENT, SPEC_STAT = 0.95, 0.99  # series specificity the thresholds are set at
THIN = (("<1.5 mm", 0.0, 1.5), ("1.5-3 mm", 1.5, 3.0), ("3-5 mm", 3.0, 99.0))
Row = dict[str, Any]


def narrow_series(rng: np.random.Generator, kind: str | None) -> Series:
    return make_series(rng, Acquisition(), int(rng.integers(8, 17)), kind)


def wide_series(rng: np.random.Generator, kind: str | None) -> Series:
    """The training generator's ranges; a third through a 192 or 384 matrix (noise made at
    that matrix, as ``data.training_slices`` does), the rest at the render grid."""
    n = int(rng.integers(8, 17))
    if rng.random() >= 1 / 3:
        return make_series(rng, TRAINING, n, kind)
    s = make_series(rng, TRAINING, n, kind, noise=False)
    assert s.head is not None
    matrix, grid = int(rng.choice(TRAIN_MATRICES)), s.slices[0].shape[0]
    s.slices = [at_matrix(x, matrix, s.head.noise, rng) for x in s.slices]
    s.pixel_mm *= grid / matrix
    return s


SPLITS: dict[str, tuple[int, Callable[[np.random.Generator, str | None], Series]]] = {
    "narrow": (SEED + 1, narrow_series),
    "wide": (SEED + 2, wide_series),
}


def aggregation() -> tuple[str, int]:
    doc = yaml.safe_load((HERE / "manifest.template.yaml").read_text().replace("@", ""))
    return doc["aggregation"]["method"], int(doc["aggregation"].get("k", 1))


def validation_series(
    rng: np.random.Generator, n: int, make: Callable[[np.random.Generator, str | None], Series]
) -> Iterator[tuple[str | None, Series]]:
    """A split's ``n`` normal, then ``n`` bleed series (kinds in turn), with their kind."""
    for i in range(2 * n):
        kind = str(ICH_KINDS[i % len(ICH_KINDS)]) if i >= n else None
        yield kind, make(rng, kind)


def series_scores(onnx_path: Path, rng: np.random.Generator, n: int,
                  make: Callable[[np.random.Generator, str | None], Series] = narrow_series,
                  others: tuple[tuple[Path, tuple[int, int]], ...] = ()) -> list[Row]:  # fmt: skip
    """``n`` normal and ``n`` bleed series: their scores (``score``, then ``others``: more
    models with their input sizes, on the same series), bleed kind, size and slice thickness."""
    method, k = aggregation()
    assert method in ("max", "top_k_mean"), "validation implements max and top_k_mean"
    k = 1 if method == "max" else k
    rows = []
    for i, (kind, s) in enumerate(validation_series(rng, n, make)):
        tops = []
        for path, size in ((onnx_path, SIZE), *others):
            x = np.stack([prepare(x, size, crop="pad_square", wins=WINDOWS, fill=-1024.0)
                          for x in s.slices])  # fmt: skip
            tops.append(float(np.sort(training.run_onnx(path, x)[:, 0])[::-1][:k].mean()))
        rows.append({"score": tops[0], "others": tops[1:], "kind": kind or "none",
                     "size_mm": s.bleed.size_mm if s.bleed else 0.0, "calcified": s.calcified,
                     "thickness_mm": s.thickness_mm})  # fmt: skip
        if (i + 1) % 100 == 0:
            print(f"  validation: {i + 1}/{2 * n} series", flush=True)
    return rows


def threshold_at_specificity(neg: np.ndarray, target: float) -> float:
    """The lowest score that leaves at least ``target`` of ``neg`` below it."""
    ranked = np.sort(neg)
    return float(ranked[min(len(ranked) - 1, int(np.ceil(target * len(ranked))) - 1)]) + 1e-4


def own_thresholds(scores: np.ndarray, rows: list[Row]) -> tuple[float, float]:
    """(urgent, stat) at the target specificities on these series alone."""
    neg = scores[np.array([r["kind"] == "none" for r in rows])]
    urgent = threshold_at_specificity(neg, SPEC_URGENT)
    return urgent, max(urgent, threshold_at_specificity(neg, SPEC_STAT))


def shipped_thresholds(own: dict[str, tuple[float, float]]) -> tuple[float, float]:
    """The rule: each threshold is the higher of the splits' own, and stat >= urgent."""
    urgent = max(u for u, _ in own.values())
    return urgent, max(max(s for _, s in own.values()), urgent)


def summary(scores: np.ndarray, rows: list[Row], urgent: float, stat: float) -> dict[str, Any]:
    """AUC and sensitivity / specificity at the given thresholds, with counts."""
    positive = np.array([r["kind"] != "none" for r in rows])
    big = np.array([r["size_mm"] >= 5 for r in rows]) & positive
    thick = np.array([r["thickness_mm"] for r in rows])

    def rate(mask: np.ndarray, t: float, above: bool) -> dict[str, Any]:
        hit = int(((scores[mask] >= t) == above).sum())
        return {"rate": hit / max(1, int(mask.sum())), "k": hit, "n": int(mask.sum())}

    def point(t: float) -> dict[str, Any]:
        return {"threshold": t, "specificity": rate(~positive, t, False),
                "sensitivity": rate(positive, t, True), "sensitivity_5mm_plus": rate(big, t, True),
                "specificity_by_thickness": {name: rate(~positive & (thick >= lo) & (thick < hi),
                                                        t, False)
                                             for name, lo, hi in THIN}}  # fmt: skip

    return {"series": len(rows), "normal": int((~positive).sum()), "bleed": int(positive.sum()),
            "auc": training.auc(scores, positive),
            "auc_5mm_plus": training.auc(scores[big | ~positive], big[big | ~positive]),
            "urgent": point(urgent), "stat": point(stat),
            "flagged_urgent_by_kind": {
                kind: float((scores[[r["kind"] == kind for r in rows]] >= urgent).mean())
                for kind in (*ICH_KINDS, "none")}}  # fmt: skip


def calibrate(onnx_path: Path) -> dict[str, Any]:
    """Score both splits, take the higher threshold of each, and summarise every split at the
    chosen thresholds (and at its own, for comparison)."""
    scored = {}
    for name, (seed, make) in SPLITS.items():
        print(f"validation split {name} (seed {seed})", flush=True)
        rows = series_scores(onnx_path, np.random.default_rng(seed), N_VAL, make)
        scored[name] = (np.array([r["score"] for r in rows]), rows)
    own = {name: own_thresholds(*v) for name, v in scored.items()}
    urgent, stat = shipped_thresholds(own)
    splits = {name: {"seed": SPLITS[name][0], "own_thresholds": {"urgent": own[name][0],
                                                                   "stat": own[name][1]},
                     **summary(*v, urgent, stat)}
              for name, v in scored.items()}  # fmt: skip
    return {
        "thresholds": {"urgent": urgent, "stat": stat,
                       "aggregation": "{} k={}".format(*aggregation()),
                       "set_at_series_specificity": [SPEC_URGENT, SPEC_STAT],
                       "rule": "the higher of the narrow and wide splits' thresholds"},
        "validation_splits": splits,
    }  # fmt: skip


def write_manifest(digest: str, urgent: float, stat: float) -> None:
    text = (HERE / "manifest.template.yaml").read_text()
    text = text.replace("@SHA256@", digest)
    text = text.replace("@URGENT@", f"{urgent:.4f}").replace("@STAT@", f"{stat:.4f}")
    (HERE / "manifest.yaml").write_text(text)


def main() -> None:
    """Calibrate the model.onnx here; keep metrics.json's training record, replace its
    calibration, write the manifest."""
    onnx_path = HERE / "model.onnx"
    metrics = json.loads((HERE / "metrics.json").read_text())
    metrics.pop("validation_series", None)  # v0.4.0's first, narrow-only calibration
    metrics.update(calibrate(onnx_path))
    training.write_json(HERE / "metrics.json", metrics)
    write_manifest(training.sha256(onnx_path), metrics["thresholds"]["urgent"],
                   metrics["thresholds"]["stat"])  # fmt: skip
    print(json.dumps({k: metrics[k] for k in ("thresholds", "validation_splits")}, indent=1))


def candidate(onnx_path: Path, out: Path) -> None:
    """A candidate's thresholds and validation figures by the same rule, into ``out`` only
    (nothing here changes), to choose between candidates on validation."""
    result = calibrate(onnx_path)
    training.write_json(out, {"onnx": str(onnx_path), "sha256": training.sha256(onnx_path),
                              **result})  # fmt: skip
    for name, split in result["validation_splits"].items():
        print(name, f"AUC5+ {split['auc_5mm_plus']:.3f}", *(
            f"{p}: sens5+ {split[p]['sensitivity_5mm_plus']['rate']:.3f}"
            f" spec {split[p]['specificity']['rate']:.3f}" for p in ("urgent", "stat")))  # fmt: skip


if __name__ == "__main__":
    if "--onnx" in sys.argv:
        args = sys.argv[1:]
        candidate(Path(args[args.index("--onnx") + 1]), Path(args[args.index("--json") + 1]))
    else:
        main()
