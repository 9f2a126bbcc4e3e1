"""Validation-only comparison of ICH ensemble / flip-TTA candidates (see ensemble.py).

    PYTHONPATH=. python models/ich/ensemble.py --members models/ich/members/ich-0.4.onnx \
        models/ich/members/ich-0.5.onnx --combine raw --flip --out /tmp/ich_raw4.onnx
    PYTHONPATH=. python models/ich/compare_ensembles.py /tmp/ich_raw4.onnx

Scores calibrate.py's two validation splits (same seeds, generators and preprocessing) ONCE
through the ``raw`` graph (every member's logit on the image and its mirror), then forms each
candidate's slice probability in numpy, aggregates as the manifest says, and sets thresholds
by calibrate.py's rule. Nothing held out is used. Writes /tmp/ich_candidates.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.triage.preprocess import prepare
from models import training
from models.ich import calibrate as cal
from models.ich.data import SIZE, WINDOWS
from models.phantoms import ICH_KINDS

# columns of the raw graph: 0.4 image, 0.4 mirror, 0.5 image, 0.5 mirror
CANDIDATES = {"0.5 alone": ([2], "prob"), "0.4 alone": ([0], "prob"),
              "ens prob": ([0, 2], "prob"), "ens logit": ([0, 2], "logit"),
              "0.5 flip": ([2, 3], "prob"), "0.5 flip logit": ([2, 3], "logit"),
              "ens flip prob": ([0, 1, 2, 3], "prob"),
              "ens flip logit": ([0, 1, 2, 3], "logit")}  # fmt: skip


def slice_probs(z: np.ndarray, cols: list[int], how: str) -> np.ndarray:
    sig = 1 / (1 + np.exp(-z[:, cols].astype(np.float64)))
    return sig.mean(1) if how == "prob" else 1 / (1 + np.exp(-z[:, cols].mean(1)))


def main() -> None:
    raw = Path(sys.argv[1])
    method, k = cal.aggregation()
    k = 1 if method == "max" else k
    scored = {}
    for name, (seed, make) in cal.SPLITS.items():
        rng, rows, logits = np.random.default_rng(seed), [], []
        for i in range(2 * cal.N_VAL):  # the same draws as calibrate.series_scores
            kind = str(ICH_KINDS[i % len(ICH_KINDS)]) if i >= cal.N_VAL else None
            s = make(rng, kind)
            x = np.stack([prepare(x, SIZE, crop="pad_square", wins=WINDOWS, fill=-1024.0)
                          for x in s.slices])  # fmt: skip
            logits.append(training.run_onnx(raw, x))
            rows.append({"kind": kind or "none", "thickness_mm": s.thickness_mm,
                         "size_mm": s.bleed.size_mm if s.bleed else 0.0})  # fmt: skip
        scored[name] = (logits, rows)
        print(f"scored {name}", flush=True)
    out = {}
    for cand, (cols, how) in CANDIDATES.items():
        series = {n: (np.array([np.sort(slice_probs(z, cols, how))[::-1][:k].mean() for z in lg]),
                      rows) for n, (lg, rows) in scored.items()}  # fmt: skip
        own = {n: cal.own_thresholds(*v) for n, v in series.items()}
        urgent = max(u for u, _ in own.values())
        stat = max(max(s for _, s in own.values()), urgent)
        out[cand] = {"urgent": urgent, "stat": stat,
                     **{n: cal.summary(*v, urgent, stat) for n, v in series.items()}}  # fmt: skip
        print(cand, f"urgent {urgent:.4f} stat {stat:.4f}", *(
            f"| {n}: AUC5+ {d['auc_5mm_plus']:.3f} sens5+ urg "
            f"{d['urgent']['sensitivity_5mm_plus']['rate']:.3f} stat "
            f"{d['stat']['sensitivity_5mm_plus']['rate']:.3f} spec urg "
            f"{d['urgent']['specificity']['rate']:.3f} stat {d['stat']['specificity']['rate']:.3f}"
            for n, d in ((n, out[cand][n]) for n in series)))  # fmt: skip
    Path("/tmp/ich_candidates.json").write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
