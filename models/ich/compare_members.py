"""Validation-only choice among ICH networks and their logit-mean ensembles (v0.7).

    PYTHONPATH=. python models/ich/ensemble.py --members models/ich/model.onnx \
        /tmp/ich_m1/model.onnx /tmp/ich_m2/model.onnx --combine raw --out /tmp/ich_raw.onnx
    PYTHONPATH=. python models/ich/compare_members.py /tmp/ich_raw.onnx --json OUT.json \
        --names 0.6.0 m1 m2

Scores calibrate.py's three validation splits (its seeds, generators and preprocessing) ONCE
through the ``raw`` graph (every member's slice logit side by side), then, for each member
alone and for every logit mean of two or more, runs calibrate.py's own ``calibrate`` on those
slice scores: the length slope fitted on the normals, the thresholds by its rule, the agent's
``aggregate``. A paired bootstrap of the AUC gain (bleeds >= 5 mm against normals) over the
first member is added. Nothing held out is used. The shipped file is then built with
``ensemble.py --combine logit`` and calibrated again through it (``calibrate.py``), so the
manifest's figures come from the file itself, not from this numpy mean.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.triage.scoring import aggregate
from models import training
from models.ich import calibrate as cal
from models.ich.compare_ensembles import auc_gain_ci, slice_probs
from models.ich.data import prep

Row = dict[str, Any]


def score_raw(raw: Path, n: int) -> dict[str, list[Row]]:
    """Every split's rows as ``calibrate.series_scores`` makes them, ``logits`` per slice and
    member in place of the scores (one onnxruntime session for all)."""
    sess = ort.InferenceSession(str(raw), providers=["CPUExecutionProvider"])
    rows_by: dict[str, list[Row]] = {}
    for name, (seed, make) in cal.SPLITS.items():
        rows = []
        for kind, s in cal.validation_series(np.random.default_rng(seed), n, make):
            x = np.stack([prep(sl) for sl in s.slices])
            z = np.concatenate([sess.run(None, {"image": x[i : i + 64]})[0]
                                for i in range(0, len(x), 64)])  # fmt: skip
            rows.append({"logits": z.astype(np.float64), "kind": kind or "none",
                         "size_mm": s.bleed.size_mm if s.bleed else 0.0,
                         "calcified": s.calcified, "thickness_mm": s.thickness_mm})  # fmt: skip
        rows_by[name] = rows
        print(f"scored {name} (seed {seed}): {len(rows)} series", flush=True)
    return rows_by


def as_candidate(rows_by: dict[str, list[Row]], cols: tuple[int, ...]) -> dict[str, list[Row]]:
    """The rows with ``slices`` (and the uncorrected ``score``, as ``series_scores`` sets it)
    of the logit mean of ``cols``."""
    raw = cal.shipped_aggregation(0.0, None)
    out = {}
    for name, rows in rows_by.items():
        out[name] = []
        for r in rows:
            p = slice_probs(r["logits"], list(cols), "logit")
            out[name].append({**r, "slices": p, "score": aggregate(p, raw)[0]})
    return out


def compare(raw: Path, names: list[str], n: int) -> dict[str, Any]:
    rows_by = score_raw(raw, n)
    subsets = [
        c for k in range(1, len(names) + 1) for c in itertools.combinations(range(len(names)), k)
    ]
    doc: dict[str, Any] = {"raw": str(raw), "members": names, "candidates": {}}
    base: dict[str, np.ndarray] = {}
    for cols in subsets:
        label = " + ".join(names[c] for c in cols)
        cand = as_candidate(rows_by, cols)
        result = cal.calibrate(raw, cand)
        how = cal.shipped_aggregation(result["thresholds"]["aggregation"]["length_slope"])
        line = [f"{label}: slope {how.length_slope:.3f} urgent {result['thresholds']['urgent']:.4f}"
                f" stat {result['thresholds']['stat']:.4f}"]  # fmt: skip
        for split, d in result["validation_splits"].items():
            sc = np.array([aggregate(r["slices"], how)[0] for r in cand[split]])
            base.setdefault(split, sc)
            d["auc_5mm_plus_gain_ci90_over_first"] = auc_gain_ci(sc, base[split], cand[split])
            line.append(f"| {split}: AUC5+ {d['auc_5mm_plus']:.3f} sens5+ "
                        f"{d['urgent']['sensitivity_5mm_plus']['rate']:.3f}/"
                        f"{d['stat']['sensitivity_5mm_plus']['rate']:.3f}")  # fmt: skip
        doc["candidates"][label] = result
        print(*line, flush=True)
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw", type=Path, help="ensemble.py --combine raw of the members")
    ap.add_argument("--names", nargs="+", required=True, help="the members, in the raw order")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--series", type=int, default=cal.N_VAL, help="per class and split")
    a = ap.parse_args()
    training.write_json(a.json, compare(a.raw, a.names, a.series))


if __name__ == "__main__":
    main()
