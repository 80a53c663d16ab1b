"""The float32 copy of a float16 model: same function, made once, rebuilt when the source changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from orchestrator.backends.local.precision import float32_model, has_float16_weights  # noqa: E402


def write_float16_model(path: Path, seed: int = 0) -> Path:
    """input (float32) → Cast(float16) → Conv with float16 weights → Relu → Cast(float32) → output:
    the shape of the shipped IS-Net export, in miniature."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.standard_normal((2, 3, 3, 3)).astype(np.float16), "w")
    bias = numpy_helper.from_array(rng.standard_normal(2).astype(np.float16), "b")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["input"], ["x16"], to=TensorProto.FLOAT16),
         helper.make_node("Conv", ["x16", "w", "b"], ["y16"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["y16"], ["r16"]),
         helper.make_node("Cast", ["r16"], ["output"], to=TensorProto.FLOAT)],
        "tiny16",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, 8, 8])],
        [weight, bias],
        value_info=[helper.make_tensor_value_info("y16", TensorProto.FLOAT16, [1, 2, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {"input": x})[0]
    return out


def test_the_copy_has_float32_weights_no_live_casts_and_computes_the_same(tmp_path: Path) -> None:
    source = write_float16_model(tmp_path / "m.onnx")
    copy = float32_model(source, tmp_path / "cache")
    assert copy != source and copy.parent == tmp_path / "cache"
    converted = onnx.load(str(copy))
    assert not has_float16_weights(converted)
    casts = [n for n in converted.graph.node if n.op_type == "Cast"]
    assert casts and all(a.i == TensorProto.FLOAT for n in casts for a in n.attribute if a.name == "to")
    # Between float32 tensors they are no-ops, and ONNX Runtime's optimised graph drops them
    # (but one that writes a graph output: a copy of the output, nothing converted).
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(copy), options, providers=["CPUExecutionProvider"])
    optimised = onnx.load(str(tmp_path / "optimised.onnx"))
    outputs = {o.name for o in optimised.graph.output}
    assert len(optimised.graph.node) < len(converted.graph.node)
    assert all(n.output[0] in outputs for n in optimised.graph.node if n.op_type == "Cast")
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    want, got = run(source, x), run(copy, x)
    assert np.abs(got - want).max() < 1e-2 * max(1.0, float(np.abs(want).max()))
    assert np.abs(got).max() > 0


def test_the_copy_is_reused_and_rebuilt_when_the_source_changes(tmp_path: Path) -> None:
    source = write_float16_model(tmp_path / "m.onnx", seed=0)
    first = float32_model(source, tmp_path / "cache")
    made = first.stat().st_mtime_ns
    assert float32_model(source, tmp_path / "cache") == first
    assert first.stat().st_mtime_ns == made
    write_float16_model(source, seed=1)  # same name, new weights
    second = float32_model(source, tmp_path / "cache")
    assert second != first
    x = np.ones((1, 3, 8, 8), dtype=np.float32)
    assert not np.allclose(run(first, x), run(second, x))
    assert not list((tmp_path / "cache").glob(".*.tmp"))


def test_a_float32_model_is_used_as_it_is(tiny_model: Path, tmp_path: Path) -> None:
    assert not has_float16_weights(onnx.load(str(tiny_model)))
    assert float32_model(tiny_model, tmp_path / "cache") == tiny_model
    assert float32_model(tiny_model, tmp_path / "cache") == tiny_model


def write_two_output_model(path: Path) -> Path:
    """float32 weights; ``output`` (what rembg reads) and a ``side`` output computed apart from it,
    as the IS-Net export's side outputs are."""
    rng = np.random.default_rng(2)
    weight = numpy_helper.from_array(rng.standard_normal((2, 3, 3, 3)).astype(np.float32), "w")
    side_weight = numpy_helper.from_array(rng.standard_normal((1, 2, 1, 1)).astype(np.float32), "sw")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["features"], pads=[1, 1, 1, 1]),
         helper.make_node("Sigmoid", ["features"], ["output"]),
         helper.make_node("Conv", ["features", "sw"], ["side_conv"]),
         helper.make_node("Sigmoid", ["side_conv"], ["side"])],
        "two_outputs",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, 8, 8]),
         helper.make_tensor_value_info("side", TensorProto.FLOAT, [1, 1, 8, 8])],
        [weight, side_weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_the_copy_computes_only_the_first_output_bit_for_bit(tmp_path: Path) -> None:
    source = write_two_output_model(tmp_path / "m.onnx")
    copy = float32_model(source, tmp_path / "cache")
    assert copy != source
    pruned = onnx.load(str(copy))
    assert [o.name for o in pruned.graph.output] == ["output"]
    assert [n.op_type for n in pruned.graph.node] == ["Conv", "Sigmoid"]
    assert [i.name for i in pruned.graph.initializer] == ["w"]
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    full = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    got = ort.InferenceSession(str(copy), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert len(full) == 2 and len(got) == 1
    assert np.array_equal(got[0], full[0])
