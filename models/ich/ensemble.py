"""Merge ICH networks into ONE ONNX file: an ensemble and/or left-right flip test-time augmentation.

    PYTHONPATH=. python models/ich/ensemble.py --members models/ich/members/ich-0.4.onnx \
        models/ich/model.onnx --combine logit --flip --out /tmp/candidate.onnx

Build-time only: needs ``pip install onnx`` (NOT a runtime dependency; the agent loads the
result with onnxruntime alone). The merged graph keeps the members' input (``image``,
[batch, 3, 128, 128]) and output (``scores``, [batch, 1] sigmoid probabilities), so the agent
and manifest do not change. Each member's last node must be the Sigmoid; the merge taps its
input (the logit), so a logit mean does not go through a saturated float32 probability.

``--combine prob``: mean of the members' (and views') probabilities; ``logit``: sigmoid of the
mean logit; ``raw``: no mean, the output is every logit side by side, [batch, members x views]
(for validation, not for the agent). ``--flip`` adds each member on the image mirrored left-right.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _copy(graph: onnx.GraphProto, tag: str, view: str, shared: set[str]) -> tuple[list, str]:
    """The member's nodes but its final Sigmoid, tensors renamed ``tag/view/...`` (initializers
    ``tag/...``, shared by both views), fed from ``view``; returns (nodes, logit tensor)."""
    last = graph.node[-1]
    assert last.op_type == "Sigmoid" and last.output[0] == graph.output[0].name, "ends in Sigmoid"
    src = graph.input[0].name

    def name(t: str) -> str:
        if t == "" or t == src:
            return view if t == src else t
        return f"{tag}/{t}" if t in shared else f"{tag}/{view}/{t}"

    nodes = []
    for n in graph.node[:-1]:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        c.name = f"{tag}/{view}/{n.name}"
        c.input[:] = [name(t) for t in n.input]
        c.output[:] = [name(t) for t in n.output]
        nodes.append(c)
    return nodes, name(last.input[0])


def merge(paths: list[Path], combine: str, flip: bool) -> onnx.ModelProto:
    models = [onnx.load(str(p)) for p in paths]
    first = models[0].graph
    opset = max(m.opset_import[0].version for m in models)
    nodes, inits, logits = [], [], []
    views = ["image"]
    if flip:  # mirror the width axis: Slice with step -1 from the last column
        inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
                  (("flip/starts", [-1]), ("flip/ends", [np.iinfo(np.int64).min]),
                   ("flip/axes", [3]), ("flip/steps", [-1]))]  # fmt: skip
        nodes.append(helper.make_node("Slice", ["image", "flip/starts", "flip/ends", "flip/axes",
                                                "flip/steps"], ["image_flipped"], "flip"))  # fmt: skip
        views.append("image_flipped")
    for i, m in enumerate(models):
        g, tag = m.graph, f"m{i}"
        assert [d.dim_value for d in g.input[0].type.tensor_type.shape.dim[1:]] == [3, 128, 128]
        shared = {t.name for t in g.initializer}
        for t in g.initializer:
            c = onnx.TensorProto()
            c.CopyFrom(t)
            c.name = f"{tag}/{t.name}"
            inits.append(c)
        for view in views:
            member_nodes, logit = _copy(g, tag, view, shared)
            nodes += member_nodes
            logits.append(logit)
    n = len(logits)
    if combine != "raw":
        inits.append(numpy_helper.from_array(np.array(1.0 / n, np.float32), "mean/scale"))
    if combine == "raw":
        nodes.append(helper.make_node("Concat", logits, ["scores"], "raw", axis=1))
    elif combine == "logit":
        nodes += [helper.make_node("Sum", logits, ["mean/sum"]),
                  helper.make_node("Mul", ["mean/sum", "mean/scale"], ["mean/logit"]),
                  helper.make_node("Sigmoid", ["mean/logit"], ["scores"])]  # fmt: skip
    else:
        probs = [f"{t}/p" for t in logits]
        nodes += [helper.make_node("Sigmoid", [t], [p]) for t, p in zip(logits, probs, strict=True)]
        nodes += [helper.make_node("Sum", probs, ["mean/sum"]),
                  helper.make_node("Mul", ["mean/sum", "mean/scale"], ["scores"])]  # fmt: skip
    width = n if combine == "raw" else 1
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", width])
    graph = helper.make_graph(nodes, "ich_merged", [first.input[0]], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = models[0].ir_version
    onnx.checker.check_model(model)
    return model


def check(
    model: onnx.ModelProto, paths: list[Path], combine: str, flip: bool, x: np.ndarray
) -> float:
    """Max abs difference between the merged graph's scores and the same mean formed in float64
    from each member run alone (onnxruntime) on ``x`` and, with ``flip``, on its mirror. The
    members' logits come from each one's own graph less its Sigmoid (``merge(..., "raw")``)."""
    import onnxruntime as ort

    def run(m: onnx.ModelProto, a: np.ndarray) -> np.ndarray:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return np.asarray(sess.run(None, {"image": a})[0], np.float64)

    views = [x, np.ascontiguousarray(x[..., ::-1])] if flip else [x]
    z = np.concatenate([run(merge([p], "raw", False), v) for p in paths for v in views], 1)
    for p in paths:  # the logit tap is the member's own output before its Sigmoid
        alone = run(onnx.load(str(p)), x)
        assert np.abs(alone - 1 / (1 + np.exp(-run(merge([p], "raw", False), x)))).max() < 1e-6
    want = (1 / (1 + np.exp(-z))).mean(1) if combine == "prob" else 1 / (1 + np.exp(-z.mean(1)))
    return float(np.abs(run(model, x)[:, 0] - want).max())


def per_slice_ms(model: onnx.ModelProto | Path, x: np.ndarray, runs: int = 15) -> float:
    """Median over ``runs`` of one batch's onnxruntime CPU time, per slice, in ms."""
    import time

    import onnxruntime as ort

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    sess.run(None, {"image": x})  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {"image": x})
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1000 / len(x)


def validation_slices() -> np.ndarray:
    """32 slices as the agent feeds them: one normal and one bleed series of 16 (narrow
    validation generator, its own seed), through the agent's preprocessing."""
    from models.ich.data import make_series, prep
    from models.phantoms import ICH_KINDS, Acquisition

    rng = np.random.default_rng(7)
    slices = [x for kind in (None, str(ICH_KINDS[0]))
              for x in make_series(rng, Acquisition(), 16, kind).slices]  # fmt: skip
    return np.stack([prep(x) for x in slices])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=Path, nargs="+", required=True)
    ap.add_argument("--combine", choices=("prob", "logit", "raw"), default="prob")
    ap.add_argument("--flip", action="store_true")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--bench", type=Path, help="also time this model (e.g. 0.5 alone) and the merge"
    )
    args = ap.parse_args()
    model = merge(args.members, args.combine, args.flip)
    onnx.save(model, str(args.out))
    print(f"{args.out}: {args.out.stat().st_size} bytes")
    if args.combine != "raw":
        x = validation_slices()
        diff = check(model, args.members, args.combine, args.flip, x)
        print(f"max abs diff vs the members run alone ({len(x)} slices): {diff:.2e}")
        if args.bench:  # batch of 32, interleaved so both see the same machine load
            pairs = [(per_slice_ms(args.bench, x, 5), per_slice_ms(model, x, 5)) for _ in range(3)]
            base, merged = (float(np.median(v)) for v in zip(*pairs, strict=True))
            print(
                f"per slice (batch 32, CPU): {args.bench.name} {base:.2f} ms, "
                f"merged {merged:.2f} ms ({merged / base:.2f}x)"
            )


if __name__ == "__main__":
    main()
