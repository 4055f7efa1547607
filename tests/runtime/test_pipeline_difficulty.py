"""The ``difficulty`` acquisition on the vehicle path: ONNX Runtime, no PyTorch.

A model with the learned difficulty head (here the tiny ONNX model of
tests/assets/tiny_detector.py with its difficulty branch) outputs ``difficulty``; the
pipeline merges it with the mirror's as it merges the probabilities and reduces it by
the region max-pool. The numbers must equal a plain NumPy reference (ONNX Runtime run
by hand, loops of region maxima), and a model without the head must be refused with a
message that says what to do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest
from shared_inputs import REFUSE_TORCH, load_asset

from alscout.errors import ConfigError, ModelError
from alscout.runtime.backends import open_backend
from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline


@pytest.fixture(scope="module")
def difficulty_model(tmp_path_factory) -> Path:
    tiny = load_asset("tiny_detector")
    path = tmp_path_factory.mktemp("difficulty") / "tiny_difficulty.onnx"
    return tiny.write(path, replace(tiny.INFO, difficulty=True))


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    base = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (160, 120))
    return [np.roll(base, 11 * i, axis=1) for i in range(4)] + [
        rng.integers(0, 256, (90, 200, 3), dtype=np.uint8),
    ]


def reference_difficulty_z(model: Path, frames, double: bool, region: int) -> np.ndarray:
    """Resize, normalise, run ONNX Runtime's ``difficulty`` output, flip the mirror's
    back and average, then the mean of region maxima, with loops and np.max."""
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    h, w = 96, 128  # the tiny model's input size
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    out = []
    for frame in frames:
        shrink = h * w < frame.shape[0] * frame.shape[1]
        resized = cv2.resize(
            frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
        x = ((resized / 255.0 - mean) / std).astype(np.float32).transpose(2, 0, 1)[None]
        (d,) = session.run(["difficulty"], {"images": np.ascontiguousarray(x)})
        if double:
            (m,) = session.run(["difficulty"], {"images": np.ascontiguousarray(x[..., ::-1])})
            d = (d + m[..., ::-1]) / 2
        d = d[0, 0].astype(np.float64)
        maxima = []
        for top in range(0, h, region):
            for left in range(0, w, region):
                maxima.append(np.max(d[top : top + region, left : left + region]))
        out.append(np.mean(maxima))
    return np.asarray(out)


@pytest.mark.parametrize("double", [True, False])
def test_difficulty_scores_equal_the_numpy_reference(difficulty_model, frames, double):
    config = PipelineConfig(
        batch_size=2, double_evaluation=double, method="difficulty", region=20, heatmap_stride=16
    )
    with ScoringPipeline(open_backend(difficulty_model, "onnxruntime-cpu"), config) as pipeline:
        assert pipeline.model_info.difficulty and pipeline.scoring_path == "numba"
        scores = pipeline.score(frames, heatmaps=True)
        probs, maps = pipeline.maps(frames[:2], difficulty=True)
        assert maps is not None and maps.shape == (2, 1, 96, 128)
        np.testing.assert_array_equal(probs, pipeline.probabilities(frames[:2]))
    expected = reference_difficulty_z(difficulty_model, frames, double, region=20)
    np.testing.assert_allclose([s.z for s in scores], expected, rtol=1e-5)
    assert len(set(np.round(expected, 6))) == len(frames)  # the frames differ: the test bites
    assert scores[0].heatmap is not None and scores[0].heatmap.shape == (6, 8)
    np.testing.assert_allclose(scores[0].heatmap.max(), maps[0].max(), rtol=1e-6)


def test_the_head_changes_nothing_for_the_other_acquisitions(tiny_model, difficulty_model, frames):
    """Same features and heads: the plain model and the one with the head agree on probs
    and on every probability-based score."""
    for method in ("divergence", "least_confidence"):
        config = PipelineConfig(batch_size=3, method=method, radius=4, region=20)
        with (
            ScoringPipeline(open_backend(tiny_model, "onnxruntime-cpu"), config) as plain,
            ScoringPipeline(open_backend(difficulty_model, "onnxruntime-cpu"), config) as head,
        ):
            a, b = plain.score(frames), head.score(frames)
        np.testing.assert_array_equal([s.z for s in a], [s.z for s in b])


def test_a_model_without_the_head_is_refused_clearly(tiny_model, frames):
    config = PipelineConfig(method="difficulty")
    with pytest.raises(ConfigError, match="difficulty_head = true"):
        ScoringPipeline(open_backend(tiny_model, "onnxruntime-cpu"), config)
    with ScoringPipeline(open_backend(tiny_model, "onnxruntime-cpu")) as pipeline:
        probs, maps = pipeline.maps(frames[:1])
        assert maps is None and probs.shape == (1, 5, 96, 128)
        with pytest.raises(ConfigError, match="difficulty_head = true"):
            pipeline.maps(frames[:1], difficulty=True)
        with pytest.raises(ModelError, match="no 'difficulty' output"):
            pipeline.backend.infer_with_difficulty(np.zeros((1, 3, 32, 32), np.float32))


CHILD = (
    r"""
import json, sys
"""
    + REFUSE_TORCH
    + r"""import numpy as np
from alscout.runtime.backends import open_backend
from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline

frames = [np.load(sys.argv[2])[i] for i in range(3)]
config = PipelineConfig(method="difficulty", region=20)
with ScoringPipeline(open_backend(sys.argv[1], "onnxruntime-cpu"), config) as pipeline:
    z = [s.z for s in pipeline.score(frames)]
print(json.dumps({"z": z, "torch": any(m.split(".")[0] == "torch" for m in sys.modules)}))
"""
)


def test_difficulty_scores_without_torch(difficulty_model, frames, tmp_path):
    batch = np.stack([cv2.resize(f, (160, 120)) for f in frames[:3]])
    np.save(tmp_path / "frames.npy", batch)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(difficulty_model), str(tmp_path / "frames.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["torch"] is False
    expected = reference_difficulty_z(difficulty_model, list(batch), True, region=20)
    np.testing.assert_allclose(report["z"], expected, rtol=1e-5)
