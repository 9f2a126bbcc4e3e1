"""Writes the test-only MR model (mr_mean/model.onnx): mean intensity through a sigmoid.

    PYTHONPATH=. python tests/data/models/make_mr_mean.py     # needs the onnx package

It exercises the MR path (one normalised channel) of the runtime; it has no clinical meaning.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
from onnx import TensorProto, helper

HERE = Path(__file__).resolve().parent / "mr_mean"


def main() -> None:
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 64, 64])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    nodes = [
        helper.make_node("ReduceMean", ["image", "axes"], ["pooled"], keepdims=0),
        helper.make_node("Sigmoid", ["pooled"], ["scores"]),
    ]
    graph = helper.make_graph(nodes, "mr_mean", [image], [scores], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = HERE / "model.onnx"
    onnx.save(model, str(path))
    print(hashlib.sha256(path.read_bytes()).hexdigest())


if __name__ == "__main__":
    main()
