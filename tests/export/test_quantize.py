"""ONNX Runtime INT8 (export/quantize.py): QDQ models that keep the plain contract."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from alscout.errors import ConfigError, DataError
from alscout.export.calibration import CalibrationBatches
from alscout.export.quantize import (
    QUALITY_KEY,
    QUANTIZATION_KEY,
    Int8Quality,
    QuantizeSettings,
    end_convolutions,
    mark_quality,
    quantize_onnx,
    read_quantization,
)
from alscout.export.verify import INT8_TOLERANCE, verify_export
from alscout.runtime.backends import open_backend


def scene(rng: np.random.Generator, height: int = 96, width: int = 128) -> np.ndarray:
    """A smooth RGB frame with a few bright blobs: varied, not noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.stack([x / width, y / height, 0.5 + 0 * x], axis=-1) * 120
    for _ in range(4):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(4, 20)
        frame += rng.uniform(40, 120) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / r**2)[..., None]
    return np.clip(frame, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(7)
    for i in range(40):
        cv2.imwrite(str(folder / f"{i:03d}.png"), scene(rng)[:, :, ::-1])
    return folder


@pytest.fixture(scope="module")
def int8_model(tiny_model, frames_dir, tmp_path_factory) -> Path:
    with open_backend(tiny_model, "onnxruntime-cpu") as backend:
        info = backend.model_info
    batches = CalibrationBatches(frames_dir, info, batch_size=4, limit=16)
    out = tmp_path_factory.mktemp("int8") / "tiny-int8.onnx"
    # the tiny model is all ends (two convolutions): quantise them both
    return quantize_onnx(tiny_model, out, batches, QuantizeSettings(float_ends=False))


def props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_the_convolutions_run_through_quantised_weights_and_the_io_stays_float(
    int8_model, tiny_model
):
    model = onnx.load(str(int8_model))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("Conv") == 2
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    for conv in (node for node in model.graph.node if node.op_type == "Conv"):
        assert producers.get(conv.input[0]) == "DequantizeLinear"  # activation
        assert producers.get(conv.input[1]) == "DequantizeLinear"  # weight
    # the head stays float: the sigmoid reads a float resize, not a dequantised tensor
    sigmoid = next(node for node in model.graph.node if node.op_type == "Sigmoid")
    assert producers[sigmoid.input[0]] == "Resize"
    weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert weights, "no INT8 weights in the quantised model"
    meta = props(int8_model)
    for key, value in props(tiny_model).items():
        assert meta[key] == value  # the contract's metadata survives
    record = json.loads(meta[QUANTIZATION_KEY])
    assert record["format"] == "int8-qdq" and record["per_channel"] is True
    assert record["calibration"]["batches"] == 4


def test_int8_follows_float32_on_frames_it_was_not_calibrated_on(
    int8_model, tiny_model, frames_dir
):
    from alscout.export.frames import read_frames

    frames = read_frames(frames_dir)[16:]  # frames calibration did not read
    # the tiny model's steep random logits magnify 8-bit steps far more than a trained
    # detector's (INT8_TOLERANCE is checked on one in tests/export/test_cli_int8.py), so
    # this asks for a small mean error and the same ranking of frames
    loose = dataclasses.replace(INT8_TOLERANCE, max_abs=1.0, mean_abs=0.01)
    with (
        open_backend(tiny_model, "onnxruntime-cpu") as reference,
        open_backend(int8_model, "onnxruntime-cpu") as candidate,
    ):
        report = verify_export(reference, candidate, loose, frames=frames)
        images = reference.model_info.normalisation.apply(np.stack(frames[:4]))
        diff = np.abs(reference.infer(images) - candidate.infer(images))
    real = next(c for c in report.comparisons if c.name == "real frames")
    assert real.passed and real.inputs == 24, report.describe()
    assert report.rankings[0].overlap == 1.0 and report.rankings[0].top == 20
    assert diff.max() > 0  # quantised, not float32 under another name


def test_mark_quality_records_the_check_and_warns_when_int8_loses(int8_model, tmp_path, caplog):
    path = tmp_path / "m.onnx"
    path.write_bytes(int8_model.read_bytes())
    lost = Int8Quality("pets[601-795]", 195, mr_float=0.40, mr_int8=0.415)
    assert not lost.within and lost.loss_points == pytest.approx(1.5)
    with caplog.at_level(logging.WARNING, logger="alscout.export.quantize"):
        mark_quality(path, lost)
    assert any("loses detection quality" in r.getMessage() for r in caplog.records)
    stored = json.loads(props(path)[QUALITY_KEY])
    assert stored["checked"] is True and stored["within"] is False
    assert stored["mr_int8"] == pytest.approx(0.415)
    record = read_quantization(props(path))
    assert record is not None and record["quality"]["within"] is False
    mark_quality(path, None)
    assert json.loads(props(path)[QUALITY_KEY]) == {"checked": False}
    assert read_quantization({"alscout.model_name": "plain"}) is None


@pytest.mark.parametrize(
    ("mr_float", "mr_int8", "within"),
    [(0.40, 0.409, True), (0.40, 0.411, False), (0.40, 0.35, True), (0.40, 0.40, True)],
)
def test_within_means_at_most_one_point_lost(mr_float, mr_int8, within):
    assert Int8Quality("d", 1, mr_float, mr_int8).within is within


def test_held_out_frames_come_after_everything_calibration_reads_spread_out(frames_dir, tiny_model):
    with open_backend(tiny_model, "onnxruntime-cpu") as backend:
        info = backend.model_info
    batches = CalibrationBatches(frames_dir, info, batch_size=2, limit=10, stride=3)
    held = batches.held_out(5)
    from alscout.export.frames import read_frames

    every = read_frames(frames_dir)
    assert len(held) == 5  # after frame 30 (10 x stride 3), spread over the 10 left
    for got, want in zip(held, every[30:40:2], strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(DataError, match="no frames after the 40"):
        CalibrationBatches(frames_dir, info, batch_size=2, limit=20, stride=2).held_out(5)


def test_quantisation_keeps_onnxruntime_warnings_off_the_root_logger(
    tiny_model, frames_dir, tmp_path, caplog
):
    with open_backend(tiny_model, "onnxruntime-cpu") as backend:
        info = backend.model_info
    batches = CalibrationBatches(frames_dir, info, batch_size=4, limit=8)
    settings = QuantizeSettings(op_types=None, moving_average=False, float_ends=False)
    with caplog.at_level(logging.WARNING):
        quantize_onnx(tiny_model, tmp_path / "all.onnx", batches, settings)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    record = json.loads(props(tmp_path / "all.onnx")[QUANTIZATION_KEY])
    assert record["op_types"] is None and record["moving_average"] is False


def test_the_convolutions_at_the_ends_stay_float_by_default(tiny_model, frames_dir, tmp_path):
    with open_backend(tiny_model, "onnxruntime-cpu") as backend:
        info = backend.model_info
    batches = CalibrationBatches(frames_dir, info, batch_size=4, limit=8)
    out = quantize_onnx(tiny_model, tmp_path / "ends.onnx", batches)
    model = onnx.load(str(out))
    initializers = {i.name for i in model.graph.initializer}
    for conv in (node for node in model.graph.node if node.op_type == "Conv"):
        assert conv.input[1] in initializers  # a float32 weight, not a dequantised one
    record = json.loads(props(out)[QUANTIZATION_KEY])
    assert record["float_ends"] is True and record["float_nodes"] == ["Conv_0", "Conv_2"]


def test_end_convolutions_are_those_reading_the_image_and_writing_the_output():
    from onnx import TensorProto, helper, numpy_helper

    def conv(x: str, w: str, out: str) -> onnx.NodeProto:
        return helper.make_node("Conv", [x, w], [out], name=out, pads=[1] * 4)

    nodes = [
        conv("images", "w0", "stem"),
        conv("stem", "w1", "inner"),
        helper.make_node("Add", ["stem", "inner"], ["skip"], name="skip"),
        conv("skip", "w2", "logits"),
        helper.make_node("Shape", ["inner"], ["size"], name="size"),
        helper.make_node("Sigmoid", ["logits"], ["probs"], name="sigmoid"),
    ]
    weights = [
        numpy_helper.from_array(np.ones((4, c, 3, 3), np.float32), f"w{i}")
        for i, c in enumerate((3, 4, 4))
    ]
    graph = helper.make_graph(
        nodes,
        "ends",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("size", TensorProto.INT64, None),
        ],
        initializer=weights,
    )
    first, last = end_convolutions(helper.make_model(graph))
    assert first == ["stem"]
    assert last == ["logits"]  # not "inner", whose shape alone reaches an output


def test_settings_refuse_empty_operator_lists():
    with pytest.raises(ConfigError, match="op_types"):
        QuantizeSettings(op_types=())
