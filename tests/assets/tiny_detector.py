"""A 2 KB model that follows the model contract (SPEC §4), built with onnx.helper alone.

``images [N,3,H,W]`` -> 3x3 stride-2 conv (8 channels) -> ReLU -> 1x1 conv (K=5)
-> bilinear resize to the input's H, W -> sigmoid -> ``probs [N,5,H,W]``, with the
alscout metadata props. With ``info.difficulty`` a second 1x1 conv (1 channel) on the
same features, resized and squashed alike, gives the learned difficulty head's output
``difficulty [N,1,H,W]``. Seeded: every build gives the same bytes. Tests load this file
by path (``load_asset``) and write the model into their temporary folder, so no
binary model is kept in git; ``python tests/assets/tiny_detector.py OUT.onnx`` writes
one by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from alscout.runtime.model_info import ModelInfo, Normalisation

HERE = Path(__file__).resolve().parent
K = 5

INFO = ModelInfo(
    name="tiny-detector",
    version="test-1",
    num_heads=K,
    default_boxes=((270, 160), (225, 130), (145, 80), (80, 50), (55, 31)),
    input_size=(96, 128),
    normalisation=Normalisation(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    training_data_digest="sha256:" + "0" * 64,
)


def build(info: ModelInfo = INFO, seed: int = 0) -> onnx.ModelProto:
    """The tiny model with ``info``'s metadata; K follows ``info.num_heads``."""
    rng = np.random.default_rng(seed)
    k = info.num_heads
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.5).astype(np.float32)
    w2 = (rng.standard_normal((k, 8, 1, 1)) * 0.7).astype(np.float32)
    b2 = np.linspace(-1.0, 0.5, k, dtype=np.float32)
    nodes = [
        helper.make_node("Conv", ["images", "w1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["logits"]),
        helper.make_node("Shape", ["logits"], ["nk"], start=0, end=2),
        helper.make_node("Shape", ["images"], ["hw"], start=2, end=4),
        helper.make_node("Concat", ["nk", "hw"], ["sizes"], axis=0),
        helper.make_node(
            "Resize",
            ["logits", "", "", "sizes"],
            ["up"],
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        ),
        helper.make_node("Sigmoid", ["up"], ["probs"]),
    ]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", k, "H", "W"])]
    initializer = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
    ]
    if info.difficulty:
        w3 = (rng.standard_normal((1, 8, 1, 1)) * 0.7).astype(np.float32)
        initializer += [
            numpy_helper.from_array(w3, "w3"),
            numpy_helper.from_array(np.array([-0.5], np.float32), "b3"),
        ]
        nodes += [
            helper.make_node("Conv", ["r1", "w3", "b3"], ["d_logits"]),
            helper.make_node("Shape", ["d_logits"], ["n1"], start=0, end=2),
            helper.make_node("Concat", ["n1", "hw"], ["d_sizes"], axis=0),
            helper.make_node(
                "Resize",
                ["d_logits", "", "", "d_sizes"],
                ["d_up"],
                mode="linear",
                coordinate_transformation_mode="half_pixel",
            ),
            helper.make_node("Sigmoid", ["d_up"], ["difficulty"]),
        ]
        outputs.append(
            helper.make_tensor_value_info("difficulty", TensorProto.FLOAT, ["N", 1, "H", "W"])
        )
    graph = helper.make_graph(
        nodes,
        "tiny_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        outputs,
        initializer=initializer,
    )
    model = helper.make_model(
        graph, producer_name="alscout-tests", opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    helper.set_model_props(model, info.to_metadata())
    onnx.checker.check_model(model, full_check=True)
    return model


def write(path: str | Path, info: ModelInfo = INFO) -> Path:
    """Save the tiny model to ``path`` and return it."""
    onnx.save(build(info), str(path))
    return Path(path)


if __name__ == "__main__":
    import sys

    write(sys.argv[1] if len(sys.argv) > 1 else HERE / "tiny_detector.onnx")
