"""A tiny ONNX model with the IS-Net/DIS interface, so most tests need not run the real one."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper


def write_tiny_dis_model(path: Path) -> Path:
    """input [1,3,1024,1024] → output [1,1,1024,1024]: the sigmoid of the channel mean.

    rembg's dis_custom session min-max normalises it, so the mask follows the brightness.
    """
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 1024, 1024])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 1024, 1024])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("ReduceMean", ["input", "axes"], ["mean"], keepdims=1),
        helper.make_node("Sigmoid", ["mean"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "tiny_dis", [inp], [out], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
