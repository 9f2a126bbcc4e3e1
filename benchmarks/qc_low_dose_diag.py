"""Why moderate CT low dose can read under the fail level: per-series noise_lf_hu.

    NUMBA_CACHE_DIR=/root/.numba_cache python benchmarks/qc_low_dose_diag.py --first 9000 --n 12
    NUMBA_CACHE_DIR=/root/.numba_cache python benchmarks/qc_low_dose_diag.py --sources

Per held-out (or --fit) seed: the acquisition (source, matrix, filter, nominal dose), the
photons per ray at that dose and at the moderate low dose (1/12), and noise_lf_hu of the
two clean slices and of each low-dose severity. ``--sources``: every CT source at one
acquisition (256^2, Hamming, dose 1.0): noise_lf_hu, and the photon noise alone of its
3.5 mm soft-tissue block means (two noise realisations differenced, / sqrt 2), which
shows how much of a source's clean reading is its own texture and native noise.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.qc import ct_metrics
from kernels.qc._ct_scene import scene
from tests.support import corpus_ct as K

warnings.filterwarnings("ignore")


def _photons(p: K.CTParams) -> float:
    """I0 per ray of a clean slice of ``p`` (as corpus_ct.ct_slice computes it)."""
    sino, px = K._clean_sino(p.source, p.matrix)
    i0 = K.I0_REF * p.dose * px * K.REF_VIEWS / sino.shape[1]
    return i0 * (4.0 if p.source.startswith("body") else 1.0)


def per_seed(first: int, n: int, fit: bool) -> None:
    draw = K.fit_params if fit else K.heldout_params
    sevs = (1, 2, 3) if fit else (2, 3)
    for seed in range(first, first + n):
        p = draw(seed)
        cells = [("clean", 0, seed * 1000 + i) for i in range(2)]
        cells += [("low_dose", s, seed) for s in sevs]
        vals = []
        for art, sev, sd in cells:
            s = K.ct_slice(p, art, sev, sd)
            vals.append(
                f"{'clean' if sev == 0 else f'sev{sev}'} {ct_metrics(s.hu, s.spacing)['noise_lf_hu']:5.2f}"
            )
        i0 = _photons(p)
        print(f"{seed} {p.source} {p.matrix} {p.filter} dose {p.dose}: I0/ray {i0:.3g} "
              f"(moderate {i0 / 12:.3g}); noise_lf_hu " + " | ".join(vals), flush=True)  # fmt: skip


def sources() -> None:
    for src in ("head_sl", "head_693", "head_j2k", "body_ph", "body_real"):
        p = K.CTParams(src, 256, 1.0, "hamming", 16, -3024.0)
        a, b = K.ct_slice(p, "clean", 0, 1), K.ct_slice(p, "clean", 0, 2)
        d = (a.hu.astype(np.float64) - b.hu) / np.sqrt(2.0)
        s = scene(a.hu, a.spacing)
        bl, area = s.block, float(s.block * s.block)
        ny, nx = s.bsum.shape
        dm = d[: ny * bl, : nx * bl].reshape(ny, bl, nx, bl).mean(axis=(1, 3))
        means = s.bsum / area
        soft = (s.bbody >= area) & (means > -100.0) & (means < 200.0)
        lf = ct_metrics(a.hu, a.spacing)["noise_lf_hu"]
        print(f"{src}: noise_lf_hu {lf:.2f}; photon noise of soft-tissue block means "
              f"{float(dm[soft].std()):.2f}", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--first", type=int, default=9000)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--fit", action="store_true", help="fit-corpus seeds instead of held-out")
    ap.add_argument("--sources", action="store_true", help="compare the sources at one dose")
    args = ap.parse_args()
    if args.sources:
        sources()
    else:
        per_seed(args.first, args.n, args.fit)


if __name__ == "__main__":
    main()
