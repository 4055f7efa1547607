"""``alscout al``'s pool scoring with the ``difficulty`` method (trainer/al/pool.py).

The method's z must be the runtime's: ONNX Runtime's ``difficulty`` output, mirrors
merged, region max-pooled; a detector without the head is refused with a clear error.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
from shared_inputs import load_asset

from alscout.errors import ConfigError
from alscout.trainer.al.config import EvaluationConfig, ScoringConfig
from alscout.trainer.al.methods import METHODS
from alscout.trainer.al.pool import score_pool
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> tuple[Dataset, list[np.ndarray]]:
    folder = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(2)
    records, images = [], []
    for i in range(5):
        blocks = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        image = cv2.resize(blocks, (160, 120), interpolation=cv2.INTER_NEAREST)
        path = folder / f"{i}.png"
        cv2.imwrite(str(path), image[:, :, ::-1])
        records.append(ImageRecord(i, path, 160, 120, (Box(20.0, 10.0, 30.0, 80.0),)))
        images.append(image)
    return Dataset(records), images


def test_difficulty_scores_are_the_region_max_pool_of_the_learned_map(pool, tmp_path):
    import onnxruntime

    tiny = load_asset("tiny_detector")
    model = tiny.write(tmp_path / "head.onnx", replace(tiny.INFO, difficulty=True))
    dataset, images = pool
    scoring = ScoringConfig(batch_size=2, region=16)
    scores = score_pool(
        model, dataset, range(5), METHODS["difficulty"], scoring, EvaluationConfig()
    )
    assert (scores.false_negatives >= 0).all()  # errors are counted as for every method
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    for i, image in enumerate(images):
        small = cv2.resize(image, (128, 96), interpolation=cv2.INTER_AREA)
        x = ((small / 255.0 - mean) / std).astype(np.float32).transpose(2, 0, 1)[None]
        (d,) = session.run(["difficulty"], {"images": np.ascontiguousarray(x)})
        (m,) = session.run(["difficulty"], {"images": np.ascontiguousarray(x[..., ::-1])})
        merged = ((d + m[..., ::-1]) / 2)[0, 0].astype(np.float64)
        maxima = [
            np.max(merged[top : top + 16, left : left + 16])
            for top in range(0, 96, 16)
            for left in range(0, 128, 16)
        ]
        assert scores.z[i] == pytest.approx(np.mean(maxima), rel=1e-5)


def test_a_detector_without_the_head_cannot_score_difficulty(pool, tiny_model):
    dataset, _ = pool
    with pytest.raises(ConfigError, match="difficulty_head = true"):
        score_pool(tiny_model, dataset, range(2), METHODS["difficulty"], ScoringConfig(),
                   EvaluationConfig())  # fmt: skip
