"""What the highest-scoring NORMAL validation series have in common (a diagnostic, no torch).

    PYTHONPATH=. python models/ich/diagnose_normals.py [--onnx models/ich/model.onnx]

Draws normal series from calibrate.py's wide and long validation generators on a seed of
their own (:data:`SEED`, used for nothing else: neither training, calibration nor held-out),
scores every slice through the ONNX file with the agent's preprocessing, and compares the
top tenth of series by their highest slice logit with all of them: how many of their heads
have beam-hardening streaks or a sharp kernel, whether a calcification reaches the highest
slice, where that slice sits (skull base, middle, vertex) and whether the peak of the
bleed map (its first member's 32x32 logit map) lies within 3 input pixels of bone.
v0.8.0's answer chose v0.9's streak-heavy training recipe (``train.py --recipe streaky``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models.ich import calibrate as cal
from models.ich.data import HEAD_MM, prep

HERE = Path(__file__).resolve().parent
SEED = 990_002  # diagnostic draws only
N_SERIES = 150  # normal series per split
BONE = 0.999  # the soft-tissue window (40 / 380) saturates at 230 HU


def map_session(onnx_path: Path) -> tuple[ort.InferenceSession, bool]:
    """A session returning the scores and, where the graph has one, the first bleed map (the
    input of the first ReduceLogSumExp)."""
    model = onnx.load(str(onnx_path))
    pool = [n for n in model.graph.node if n.op_type == "ReduceLogSumExp"]
    if pool:
        tap = next(n for n in model.graph.node if pool[0].input[0] in n.output).input[0]
        model.graph.output.append(helper.make_tensor_value_info(tap, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess, bool(pool)


def rows(onnx_path: Path, n: int) -> list[dict[str, Any]]:
    sess, has_map = map_session(onnx_path)
    out, rng = [], np.random.default_rng(SEED)
    for make in (cal.wide_series, cal.long_series):
        for _ in range(n):
            s = make(rng, None)
            x = np.stack([prep(sl) for sl in s.slices]).astype(np.float32)
            got = sess.run(None, {"image": x})
            p = np.clip(got[0][:, 0].astype(np.float64), 1e-7, 1 - 1e-7)
            j, head = int(np.argmax(p)), s.head
            assert head is not None
            near_bone = None
            if has_map:
                flat = got[1][j].reshape(-1, got[1].shape[-1])
                r, c = np.unravel_index(int(np.argmax(flat)), flat.shape)
                f = x.shape[-1] // flat.shape[-1]
                dist = ndimage.distance_transform_edt(x[j, 2] < BONE)
                near_bone = bool(dist[f * r + f // 2, f * c + f // 2] <= 3)
            lv = s.levels[j]  # a calcification reaches the slice as ScanHead.render draws it
            calc = any(abs(lv - c[2]) * HEAD_MM < c[3] + head.thick / 2 for c in head.calcs)
            out.append({"logit": float(np.log(p[j] / (1 - p[j]))), "split": make.__name__,
                        "streaky": head.streaky, "sharp": head.sharp, "calc_at_max": calc,
                        "level": lv, "near_bone": near_bone})  # fmt: skip
    return out


def report(found: list[dict[str, Any]]) -> None:
    found = sorted(found, key=lambda r: -r["logit"])
    top = found[: max(1, len(found) // 10)]
    share = lambda g, f: float(np.mean([f(r) for r in g]))  # noqa: E731
    tests = {"streaky head": lambda r: r["streaky"], "sharp kernel": lambda r: r["sharp"],
             "calcification at the max slice": lambda r: r["calc_at_max"],
             "max slice at the skull base (< 0.22)": lambda r: r["level"] < 0.22,
             "max slice near the vertex (> 0.72)": lambda r: r["level"] > 0.72,
             "map peak within 3 px of bone": lambda r: bool(r["near_bone"])}  # fmt: skip
    print(f"{len(found)} normal series; top tenth: {len(top)} (logit >= {top[-1]['logit']:.2f})")
    for name, f in tests.items():
        print(f"  {name}: top {share(top, f):.2f}, all {share(found, f):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", type=Path, default=HERE / "model.onnx")
    ap.add_argument("--series", type=int, default=N_SERIES, help="normal series per split")
    a = ap.parse_args()
    report(rows(a.onnx, a.series))


if __name__ == "__main__":
    main()
