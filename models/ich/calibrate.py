"""Series-level calibration of the ICH model's ``urgent`` and ``stat`` thresholds (no torch).

    NUMBA_CACHE_DIR=/root/.numba_cache PYTHONPATH=. python models/ich/calibrate.py   # repo root

    ... models/ich/calibrate.py --onnx CANDIDATE.onnx --json OUT.json   # compare only
    ... models/ich/calibrate.py --from OUT.json   # ship that result (same model.onnx)

Re-sets the length slope and the thresholds of the model.onnx already here (no retraining;
``train.py`` calls the same code after training) and writes manifest.yaml (the sha256 is the
file's, so it does not change unless model.onnx does) and the calibration part of
metrics.json. About 8 minutes on two shared CPU cores. ``--onnx``: the same for a candidate,
with and without the length correction, into ``--json`` only.

Three validation splits, each 300 normal and 300 bleed series (60 per kind) through one head,
a bleed on 1-3 consecutive slices, scored the way the agent scores them (each slice through
the ONNX file with the agent's preprocessing, then the agent's own ``aggregate``):

- ``narrow`` (seed 20240602): ``Acquisition()``, the v0.3 validation generator unchanged,
  8-16 slices 4-8 mm apart;
- ``wide`` (seed 20240603): the TRAINING generator's ranges (``data.TRAINING``: field of view
  180-320 mm, noise 0.6-3.4 HU, head size x0.78-1.2, 30% small bleeds, thin slices included),
  and, as in training, a third of the series through a 192 or 384 scanner matrix; 8-16 slices;
- ``long`` (seed 20240604, since v0.6.0): ``Acquisition()``, 16-40 slices 2.5-3.5 mm apart, whole
  heads, since a real head CT has 30-300 slices and false alarms grow with them.

The length slope (``fit_length_slope``) is fitted on the three splits' normals. Then each
threshold is the most conservative (highest) of the splits' thresholds at the target series
specificity (urgent 0.95, stat 0.99), on the corrected scores, so the target holds on each.
Nothing of the held-out benchmark (``benchmarks/eval_triage.py``: its seed, its generator) is
used here.
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

from agent.triage.models import Aggregation
from agent.triage.preprocess import prepare
from agent.triage.scoring import aggregate
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
SEED = 20240601  # training's; the splits use SEED + 1, + 2 and + 3 (narrow, wide, long)
N_VAL = 300  # validation series of each class (normal; bleed)
SPEC_URGENT, SPEC_STAT = 0.95, 0.99  # series specificity the thresholds are set at
THIN = (("<1.5 mm", 0.0, 1.5), ("1.5-3 mm", 1.5, 3.0), ("3-5 mm", 3.0, 99.0))
LENGTHS = (("<=12", 0, 13), ("13-24", 13, 25), ("25-40", 25, 10**6))  # slices in the series
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


def long_series(rng: np.random.Generator, kind: str | None) -> Series:
    """Whole heads: 16-40 slices 2.5-3.5 mm apart (``Acquisition()``). A real head CT has 30
    to 300 slices; the other splits have 8-16, too few to see how false alarms grow."""
    return make_series(rng, Acquisition(), int(rng.integers(16, 41)), kind, spacing_mm=(2.5, 3.5))


SPLITS: dict[str, tuple[int, Callable[[np.random.Generator, str | None], Series]]] = {
    "narrow": (SEED + 1, narrow_series),
    "wide": (SEED + 2, wide_series),
    "long": (SEED + 3, long_series),  # v0.6.0
}


def _template_aggregation() -> dict[str, Any]:
    doc = yaml.safe_load((HERE / "manifest.template.yaml").read_text().replace("@", ""))
    return dict(doc["aggregation"])


def aggregation() -> tuple[str, int]:
    doc = _template_aggregation()
    return doc["method"], int(doc.get("k", 1))


# Series longer than this lose the fitted slope x ln(slices / reference) in logit (the length
# correction, agent.triage.models.Aggregation; the template's length_reference, since v0.6.0);
# None: no correction.
LENGTH_REFERENCE: int | None = _template_aggregation().get("length_reference")


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
    raw = shipped_aggregation(0.0, None)  # the template's method and k, uncorrected
    rows = []
    for i, (kind, s) in enumerate(validation_series(rng, n, make)):
        per_model = [training.run_onnx(path, np.stack([
            prepare(x, size, crop="pad_square", wins=WINDOWS, fill=-1024.0) for x in s.slices
        ]))[:, 0] for path, size in ((onnx_path, SIZE), *others)]  # fmt: skip
        tops = [aggregate(v, raw)[0] for v in per_model]
        rows.append({"score": tops[0], "others": tops[1:], "kind": kind or "none",
                     "slices": per_model[0],
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
    length = np.array([len(r["slices"]) for r in rows])

    def rate(mask: np.ndarray, t: float, above: bool) -> dict[str, Any]:
        hit = int(((scores[mask] >= t) == above).sum())
        return {"rate": hit / max(1, int(mask.sum())), "k": hit, "n": int(mask.sum())}

    def point(t: float) -> dict[str, Any]:
        return {"threshold": t, "specificity": rate(~positive, t, False),
                "sensitivity": rate(positive, t, True), "sensitivity_5mm_plus": rate(big, t, True),
                "specificity_by_thickness": {name: rate(~positive & (thick >= lo) & (thick < hi),
                                                        t, False)
                                             for name, lo, hi in THIN},
                "specificity_by_length": {name: rate(~positive & (length >= lo) & (length < hi),
                                                     t, False)
                                          for name, lo, hi in LENGTHS}}  # fmt: skip

    return {"series": len(rows), "normal": int((~positive).sum()), "bleed": int(positive.sum()),
            "auc": training.auc(scores, positive),
            "auc_5mm_plus": training.auc(scores[big | ~positive], big[big | ~positive]),
            "urgent": point(urgent), "stat": point(stat),
            "flagged_urgent_by_kind": {
                kind: float((scores[[r["kind"] == kind for r in rows]] >= urgent).mean())
                for kind in (*ICH_KINDS, "none")}}  # fmt: skip


def fit_length_slope(scored: dict[str, list[Row]]) -> float:
    """The growth of a normal series' raw score (logit) with ln(slices): least squares over
    every split's normals, each split about its own mean (their levels differ), kept in the
    manifest's 0..5."""
    xs, ys = [], []
    for rows in scored.values():
        normal = [r for r in rows if r["kind"] == "none"]
        x = np.log([len(r["slices"]) for r in normal])
        p = np.clip([r["score"] for r in normal], 1e-7, 1 - 1e-7)
        y = np.log(p / (1 - p))
        xs.append(x - x.mean())
        ys.append(y - y.mean())
    x, y = np.concatenate(xs), np.concatenate(ys)
    return float(np.clip((x * y).sum() / max((x * x).sum(), 1e-12), 0.0, 5.0))


def shipped_aggregation(slope: float, reference: int | None = LENGTH_REFERENCE) -> Aggregation:
    method, k = aggregation()
    return Aggregation(method=method, k=k, length_reference=reference,  # type: ignore[arg-type]
                       length_slope=slope if reference else 0.0)  # fmt: skip


def score_splits(onnx_path: Path) -> dict[str, list[Row]]:
    rows_by = {}
    for name, (seed, make) in SPLITS.items():
        print(f"validation split {name} (seed {seed})", flush=True)
        rows_by[name] = series_scores(onnx_path, np.random.default_rng(seed), N_VAL, make)
    return rows_by


def calibrate(onnx_path: Path, rows_by: dict[str, list[Row]] | None = None,
              reference: int | None = LENGTH_REFERENCE) -> dict[str, Any]:  # fmt: skip
    """Score every split, fit the length slope on their normals, take the higher threshold of
    each split on the corrected scores (the agent's ``aggregate``), and summarise every split
    at the chosen thresholds (and at its own, for comparison)."""
    rows_by = rows_by or score_splits(onnx_path)
    how = shipped_aggregation(fit_length_slope(rows_by) if reference else 0.0, reference)
    scored = {name: (np.array([aggregate(r["slices"], how)[0] for r in rows]), rows)
              for name, rows in rows_by.items()}  # fmt: skip
    own = {name: own_thresholds(*v) for name, v in scored.items()}
    urgent, stat = shipped_thresholds(own)
    splits = {name: {"seed": SPLITS[name][0], "own_thresholds": {"urgent": own[name][0],
                                                                   "stat": own[name][1]},
                     **summary(*v, urgent, stat)}
              for name, v in scored.items()}  # fmt: skip
    return {
        "thresholds": {"urgent": urgent, "stat": stat,
                       "aggregation": how.model_dump(),
                       "set_at_series_specificity": [SPEC_URGENT, SPEC_STAT],
                       "rule": "the highest of the splits' thresholds"},
        "validation_splits": splits,
    }  # fmt: skip


def write_manifest(digest: str, urgent: float, stat: float, slope: float) -> None:
    text = (HERE / "manifest.template.yaml").read_text()
    text = text.replace("@SHA256@", digest).replace("@SLOPE@", f"{slope:.4f}")
    text = text.replace("@URGENT@", f"{urgent:.4f}").replace("@STAT@", f"{stat:.4f}")
    (HERE / "manifest.yaml").write_text(text)


def main(candidate_json: Path | None = None) -> None:
    """Calibrate the model.onnx here; keep metrics.json's training record, replace its
    calibration, write the manifest. ``candidate_json``: take the length-corrected result of
    a ``--onnx`` run on this very file (its sha256 must match) instead of scoring again."""
    onnx_path = HERE / "model.onnx"
    metrics = json.loads((HERE / "metrics.json").read_text())
    metrics.pop("validation_series", None)  # v0.4.0's first, narrow-only calibration
    if candidate_json is None:
        metrics.update(calibrate(onnx_path))
    else:
        doc = json.loads(candidate_json.read_text())
        if doc["sha256"] != training.sha256(onnx_path):
            raise SystemExit(f"{candidate_json} was scored on another file than {onnx_path}")
        metrics.update(doc["length_corrected"])
    training.write_json(HERE / "metrics.json", metrics)
    th = metrics["thresholds"]
    write_manifest(training.sha256(onnx_path), th["urgent"], th["stat"],
                   th["aggregation"]["length_slope"])  # fmt: skip
    print(json.dumps({k: metrics[k] for k in ("thresholds", "validation_splits")}, indent=1))


def candidate(onnx_path: Path, out: Path) -> None:
    """A candidate's thresholds and validation figures by the same rule, with and without the
    length correction, into ``out`` only (nothing here changes), to choose on validation."""
    rows_by = score_splits(onnx_path)
    doc: dict[str, Any] = {"onnx": str(onnx_path), "sha256": training.sha256(onnx_path)}
    for label, reference in (("length_corrected", LENGTH_REFERENCE), ("uncorrected", None)):
        doc[label] = result = calibrate(onnx_path, rows_by, reference)
        th = result["thresholds"]
        print(label, f"slope {th['aggregation']['length_slope']:.3f}",
              f"urgent {th['urgent']:.4f} stat {th['stat']:.4f}")  # fmt: skip
        for name, split in result["validation_splits"].items():
            print(f"  {name} AUC5+ {split['auc_5mm_plus']:.3f}", *(
                f"{p}: sens5+ {split[p]['sensitivity_5mm_plus']['rate']:.3f}"
                f" spec {split[p]['specificity']['rate']:.3f}" for p in ("urgent", "stat")),
                "spec by length", {b: round(v["rate"], 3) for b, v in
                                   split["urgent"]["specificity_by_length"].items() if v["n"]})  # fmt: skip
    training.write_json(out, doc)


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--onnx" in args:
        candidate(Path(args[args.index("--onnx") + 1]), Path(args[args.index("--json") + 1]))
    else:
        main(Path(args[args.index("--from") + 1]) if "--from" in args else None)
