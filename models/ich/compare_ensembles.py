"""Validation-only comparison of ICH ensemble / flip-TTA candidates (see ensemble.py).

    PYTHONPATH=. python models/ich/ensemble.py --members models/ich/members/ich-0.4.onnx \
        models/ich/model.onnx --combine raw --flip --out /tmp/ich_raw4.onnx
    PYTHONPATH=. python models/ich/compare_ensembles.py /tmp/ich_raw4.onnx

Scores calibrate.py's two validation splits (same seeds, generators and preprocessing) ONCE
through the ``raw`` graph (every member's logit on the image and its mirror), then forms each
candidate's slice probability in numpy, aggregates as the manifest says, and sets thresholds
by calibrate.py's rule (the splits of its day: since v0.5.1 there is a third, ``long``, and
this script scores it too but applies no length correction). Nothing held out is used.
Writes /tmp/ich_candidates.json (the run against v0.5.0 is kept, less the per-kind flag
rates, as ensemble_validation.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models import training
from models.ich import calibrate as cal
from models.ich.data import prep

# columns of the raw graph: 0.4 image, 0.4 mirror, 0.5 image, 0.5 mirror
CANDIDATES = {"0.5 alone": ([2], "prob"), "0.4 alone": ([0], "prob"),
              "ens prob": ([0, 2], "prob"), "ens logit": ([0, 2], "logit"),
              "0.5 flip": ([2, 3], "prob"), "0.5 flip logit": ([2, 3], "logit"),
              "ens flip prob": ([0, 1, 2, 3], "prob"),
              "ens flip logit": ([0, 1, 2, 3], "logit")}  # fmt: skip


def slice_probs(z: np.ndarray, cols: list[int], how: str) -> np.ndarray:
    sig = 1 / (1 + np.exp(-z[:, cols].astype(np.float64)))
    return sig.mean(1) if how == "prob" else 1 / (1 + np.exp(-z[:, cols].mean(1)))


def auc_gain_ci(score: np.ndarray, base: np.ndarray, rows: list[dict]) -> list[float]:
    """5-95% interval of AUC(score) - AUC(base), bleeds >= 5 mm vs normals, resampling series."""
    keep = np.array([r["kind"] == "none" or r["size_mm"] >= 5 for r in rows])
    pos = np.array([r["kind"] != "none" for r in rows])[keep]
    a, b, rng, gains = score[keep], base[keep], np.random.default_rng(0), []
    for _ in range(1000):
        i = rng.integers(0, len(a), len(a))
        gains.append(training.auc(a[i], pos[i]) - training.auc(b[i], pos[i]))
    return [float(np.percentile(gains, 5)), float(np.percentile(gains, 95))]


def main() -> None:
    raw = Path(sys.argv[1])
    method, k = cal.aggregation()
    k = 1 if method == "max" else k
    scored = {}
    for name, (seed, make) in cal.SPLITS.items():
        rows, logits = [], []
        for kind, s in cal.validation_series(np.random.default_rng(seed), cal.N_VAL, make):
            logits.append(training.run_onnx(raw, np.stack([prep(x) for x in s.slices])))
            rows.append({"kind": kind or "none", "thickness_mm": s.thickness_mm,
                         "size_mm": s.bleed.size_mm if s.bleed else 0.0})  # fmt: skip
        scored[name] = (logits, rows)
        print(f"scored {name}", flush=True)
    out: dict = {}
    base: dict[str, np.ndarray] = {}
    for cand, (cols, how) in CANDIDATES.items():
        series = {n: (np.array([np.sort(slice_probs(z, cols, how))[::-1][:k].mean() for z in lg]),
                      rows) for n, (lg, rows) in scored.items()}  # fmt: skip
        urgent, stat = cal.shipped_thresholds(
            {n: cal.own_thresholds(*v) for n, v in series.items()}
        )
        out[cand] = {"urgent": urgent, "stat": stat,
                     **{n: cal.summary(*v, urgent, stat) for n, v in series.items()}}  # fmt: skip
        base = base or {n: v[0] for n, v in series.items()}  # the first candidate: 0.5 alone
        for n, (sc, rows) in series.items():  # paired bootstrap of the AUC (5 mm+) gain
            out[cand][n]["auc_5mm_plus_gain_ci90"] = auc_gain_ci(sc, base[n], rows)
        print(cand, f"urgent {urgent:.4f} stat {stat:.4f}", *(
            f"| {n}: AUC5+ {d['auc_5mm_plus']:.3f} sens5+ urg "
            f"{d['urgent']['sensitivity_5mm_plus']['rate']:.3f} stat "
            f"{d['stat']['sensitivity_5mm_plus']['rate']:.3f} spec urg "
            f"{d['urgent']['specificity']['rate']:.3f} stat {d['stat']['specificity']['rate']:.3f} "
            f"AUC gain CI90 {d['auc_5mm_plus_gain_ci90'][0]:+.3f}..{d['auc_5mm_plus_gain_ci90'][1]:+.3f}"
            for n, d in ((n, out[cand][n]) for n in series)))  # fmt: skip
    Path("/tmp/ich_candidates.json").write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
