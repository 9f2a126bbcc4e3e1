"""How the shipped length correction holds on series longer than calibration saw (no torch).

    NUMBA_CACHE_DIR=/root/.numba_cache PYTHONPATH=. python models/ich/length_check.py

100 normal and 100 bleed series of 60-100 slices 1.2-2.0 mm apart (``Acquisition()``, the
validation generator; seed 20240610, used by nothing else), scored like ``calibrate.py`` and
aggregated with the shipped manifest's aggregation and, for comparison, without the length
correction. The bleed is still on 1-3 slices, as in every split, so at this spacing
sensitivity is pessimistic (a real bleed of 5 mm or more spans several thin slices). About
4 minutes on two CPU cores. Validation data: nothing is chosen from it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.triage.models import Aggregation, read_manifest
from agent.triage.scoring import aggregate
from models.ich import calibrate as cal
from models.ich.data import Series, make_series
from models.phantoms import Acquisition

HERE = Path(__file__).resolve().parent
SEED = 20240610


def very_long(rng: np.random.Generator, kind: str | None) -> Series:
    return make_series(rng, Acquisition(), int(rng.integers(60, 101)), kind,
                       spacing_mm=(1.2, 2.0))  # fmt: skip


def main() -> None:
    man = read_manifest(HERE / "manifest.yaml")
    shipped, th = man.aggregation, man.thresholds["haemorrhage"]
    rows = cal.series_scores(HERE / "model.onnx", np.random.default_rng(SEED), 100, very_long)
    normal = np.array([r["kind"] == "none" for r in rows])
    big = np.array([r["size_mm"] >= 5 for r in rows]) & ~normal
    for label, how in (("corrected (shipped)", shipped), ("uncorrected", Aggregation())):
        sc = np.array([aggregate(r["slices"], how)[0] for r in rows])
        print(f"{label}: normals routine {(sc[normal] < th.urgent).mean():.2f}, not stat "
              f"{(sc[normal] < th.stat).mean():.2f}, bleeds >= 5 mm urgent or stat "
              f"{(sc[big] >= th.urgent).mean():.2f} ({int(normal.sum())} normal, "
              f"{int(big.sum())} bleeds >= 5 mm)")  # fmt: skip


if __name__ == "__main__":
    main()
