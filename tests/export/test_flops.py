"""Multiply-adds read from an ONNX graph (export/flops.py), against counts done by hand."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from alscout.errors import ModelError
from alscout.export.flops import count_macs


def weight(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def hand_counted_graph() -> onnx.ModelProto:
    """images [N,3,16,20] -> Conv 3->8 k3 s2 -> grouped Conv -> ConvTranspose -> Relu
    -> GlobalAveragePool -> Flatten -> Gemm (transB) -> MatMul."""
    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1] * 4),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], group=4, pads=[1] * 4),
        helper.make_node("ConvTranspose", ["c2", "w3"], ["c3"], strides=[2, 2]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w4"], ["d1"], transB=1),
        helper.make_node("MatMul", ["d1", "w5"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "hand_counted",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])],
        initializer=[
            weight("w1", 8, 3, 3, 3),
            weight("b1", 8),
            weight("w2", 8, 2, 3, 3),  # 4 groups of 2 channels
            weight("w3", 8, 4, 2, 2),  # ConvTranspose: [C_in, C_out / groups, kH, kW]
            weight("w4", 5, 4),
            weight("w5", 5, 3),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_every_counted_operator_matches_the_hand_count():
    count = count_macs(hand_counted_graph(), (2, 3, 16, 20))
    # conv 1: out [2, 8, 8, 10], each a sum of 3 x 3 x 3 products
    conv1 = 2 * 8 * 8 * 10 * 27
    # grouped conv: out [2, 8, 8, 10], each sums 2 channels x 3 x 3
    conv2 = 2 * 8 * 8 * 10 * 18
    # transposed conv: each of the [2, 8, 8, 10] inputs scatters into 4 x 2 x 2 outputs
    deconv = 2 * 8 * 8 * 10 * 16
    gemm = 2 * 4 * 5  # [2, 4] x [4, 5]
    matmul = 2 * 5 * 3  # [2, 5] x [5, 3]
    assert dict(count.by_op) == {
        "Conv": conv1 + conv2,
        "ConvTranspose": deconv,
        "Gemm": gemm,
        "MatMul": matmul,
    }
    assert dict(count.nodes) == {"Conv": 2, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
    assert count.macs == 78150 == conv1 + conv2 + deconv + gemm + matmul
    assert count.flops == 2 * count.macs
    assert count.input_shape == (2, 3, 16, 20)


def test_the_tiny_detector_and_its_int8_twin_count_the_same(tiny_model, tmp_path):
    import cv2

    from alscout.export.calibration import CalibrationBatches
    from alscout.export.quantize import QuantizeSettings, quantize_onnx
    from alscout.runtime.backends import open_backend

    one = count_macs(tiny_model, (1, 3, 96, 128))
    # 3x3 stride-2 conv 3->8 to 48x64, then 1x1 conv 8->5
    assert one.macs == 8 * 48 * 64 * 27 + 5 * 48 * 64 * 8
    assert count_macs(tiny_model, (2, 3, 96, 128)).macs == 2 * one.macs  # double evaluation
    rng = np.random.default_rng(0)
    for i in range(8):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng.integers(0, 256, (96, 128, 3), np.uint8))
    with open_backend(tiny_model, "onnxruntime-cpu") as backend:
        batches = CalibrationBatches(tmp_path, backend.model_info, batch_size=4, limit=8)
    int8 = quantize_onnx(
        tiny_model, tmp_path / "int8.onnx", batches, QuantizeSettings(float_ends=False)
    )
    assert count_macs(int8, (1, 3, 96, 128)).macs == one.macs


def test_a_shape_that_cannot_be_inferred_is_an_error():
    nodes = [helper.make_node("Conv", ["images", "w"], ["out"])]
    graph = helper.make_graph(
        nodes,
        "unknown_weight",
        [
            helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, None),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError, match="Conv node"):
        count_macs(model, (1, 3, 8, 8))


def test_the_input_shape_is_checked():
    with pytest.raises(ModelError, match=r"\[N, 3, H, W\]"):
        count_macs(hand_counted_graph(), (1, 3, 0, 8))
