"""An ONNX Runtime INT8 model (export/quantize.py) runs where the float32 one does."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from alscout.export.calibration import CalibrationBatches
from alscout.export.quantize import QuantizeSettings, quantize_onnx
from alscout.runtime.backends import open_backend
from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline


def frames(count: int, seed: int) -> list[np.ndarray]:
    """Smooth RGB frames ``[96, 128, 3]`` with a few bright blobs each."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:96, 0:128].astype(np.float32)
    out = []
    for _ in range(count):
        frame = np.stack([x / 128, y / 96, 0.5 + 0 * x], axis=-1) * 120
        for _ in range(4):
            cy, cx, r = rng.uniform(0, 96), rng.uniform(0, 128), rng.uniform(4, 20)
            blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / r**2)[..., None]
            frame += rng.uniform(40, 120) * blob
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def int8_model(tiny_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calibration")
    for i, frame in enumerate(frames(16, seed=1)):
        cv2.imwrite(str(folder / f"{i:02d}.png"), frame[:, :, ::-1])
    with open_backend(tiny_model, "onnxruntime-cpu") as backend:
        info = backend.model_info
    out = tmp_path_factory.mktemp("int8") / "int8.onnx"
    batches = CalibrationBatches(folder, info, batch_size=4)
    # the tiny model is all ends (two convolutions): quantise them both
    return quantize_onnx(tiny_model, out, batches, QuantizeSettings(float_ends=False))


def test_the_runtime_loads_an_int8_model_and_scores_like_float32(int8_model, tiny_model):
    held_out = frames(6, seed=2)  # not the calibration frames
    config = PipelineConfig(batch_size=3)
    with (
        ScoringPipeline(open_backend(tiny_model, "onnxruntime-cpu"), config) as reference,
        ScoringPipeline(open_backend(int8_model, "auto"), config) as candidate,
    ):
        assert candidate.backend.name == "onnxruntime-cpu"
        assert candidate.model_info.num_heads == reference.model_info.num_heads
        want = np.array([s.z for s in reference.score(held_out)])
        got = [s for s in candidate.score(held_out, heatmaps=True)]
    z = np.array([s.z for s in got])
    assert got[0].heatmap is not None and got[0].heatmap.shape == (6, 8)
    assert not np.array_equal(z, want)  # quantised, not float32 under another name
    # 8-bit convolutions move z by a few percent on this model (about 2 % measured)
    np.testing.assert_allclose(z, want, rtol=0.05)
