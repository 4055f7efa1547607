"""Per-frame errors from head maps, and the rank correlation of the rank check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from alscout.errors import InvalidInputError
from alscout.trainer.al.config import EvaluationConfig
from alscout.trainer.al.pool import PoolScores, frame_counts, frame_errors, spearman
from alscout.trainer.data.annotations import Box, ImageRecord
from alscout.trainer.evaluation.detections import DEFAULT_BOXES

H, W = 240, 320  # model input; the record is stored at twice that size


def _maps(peaks: list[tuple[int, int, int]]) -> np.ndarray:
    probs = np.zeros((5, H, W), np.float32)
    for k, row, col in peaks:
        probs[k, row, col] = 0.9
    return probs


def _record() -> ImageRecord:
    # head 2's default box at 640x480 is 145 x 80: a person of that size centred at
    # (200, 300) in the stored 640x480 image is (100, 150) at the 320x240 input.
    box = Box(200 - 40, 300 - 72.5, 80, 145)
    return ImageRecord(0, Path("x.png"), 640, 480, (box,))


def test_a_peak_on_the_person_is_no_error() -> None:
    fp, fn = frame_errors(_record(), _maps([(2, 150, 100)]), DEFAULT_BOXES, EvaluationConfig())
    assert (fp, fn) == (0, 0)


def test_missed_person_and_false_alarm_are_counted() -> None:
    fp, fn = frame_errors(_record(), _maps([(2, 60, 260)]), DEFAULT_BOXES, EvaluationConfig())
    assert (fp, fn) == (1, 1)


def test_peaks_below_the_error_threshold_do_not_count() -> None:
    strict = EvaluationConfig(error_threshold=0.95)
    fp, fn = frame_errors(_record(), _maps([(2, 150, 100), (2, 60, 260)]), DEFAULT_BOXES, strict)
    assert (fp, fn) == (0, 1)


def test_frame_counts_add_the_persons_that_count() -> None:
    record = _record()
    tiny = Box(10, 10, 8, 16)  # far below the paper's height filter: ignore
    record = ImageRecord(0, Path("x.png"), 640, 480, (*record.boxes, tiny))
    counts = frame_counts(record, _maps([(2, 60, 260)]), DEFAULT_BOXES, EvaluationConfig())
    assert counts == (1, 1, 1)
    assert (counts.false_positives, counts.false_negatives, counts.ground_truth) == (1, 1, 1)


def test_pool_scores_error_rate() -> None:
    fp, fn, gt = np.array([0, 2, -1]), np.array([0, 1, -1]), np.array([0, 4, -1])
    scores = PoolScores(np.zeros(3), fp, fn, 0.0, 3, None, gt)
    assert scores.errors.tolist() == [0, 3, -1]
    assert scores.error_rate[:2].tolist() == [0.0, 0.5] and np.isnan(scores.error_rate[2])
    with pytest.raises(InvalidInputError):
        _ = PoolScores(np.zeros(3), fp, fn, 0.0, 3).error_rate


def test_spearman_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=50)
    b = rng.integers(0, 6, size=50).astype(float)  # many ties, like error counts
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(spearman(a, np.ones(50)))
    with pytest.raises(InvalidInputError):
        spearman(a, b[:10])


def test_score_pool_uses_the_acquisition_registry_and_the_quality_gate(tiny_model, tmp_path):
    """Every method's z is the runtime registry's score of the pipeline's probabilities,
    and with the gate on the flat and blurred frames are marked, never the textured."""
    import cv2

    from alscout.runtime.acquisition import AcquisitionConfig, frame_scores, reference_boxes
    from alscout.runtime.backends import open_backend
    from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline
    from alscout.trainer.al.config import ScoringConfig
    from alscout.trainer.al.methods import METHODS
    from alscout.trainer.al.pool import score_pool
    from alscout.trainer.data.annotations import Dataset

    rng = np.random.default_rng(0)
    images = []
    for i in range(6):
        blocks = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        image = cv2.resize(blocks, (160, 120), interpolation=cv2.INTER_NEAREST)
        if i == 2:
            image = np.zeros_like(image)
        if i == 4:
            image = cv2.GaussianBlur(image, (0, 0), 4.0)
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), image[:, :, ::-1])
        images.append((path, image))
    pool = Dataset([ImageRecord(i, p, 160, 120) for i, (p, _) in enumerate(images)])
    scoring = ScoringConfig(batch_size=4, radius=3, region=16, quality_gate=True)
    evaluation = EvaluationConfig()
    backend = open_backend(tiny_model, "onnxruntime-cpu")
    config = PipelineConfig(batch_size=4, radius=3, region=16)
    with ScoringPipeline(backend, config) as pipeline:
        probs = pipeline.probabilities([image for _, image in images])
        info = pipeline.model_info
    boxes = reference_boxes(info.default_boxes, info.input_size)
    for name in ("least_confidence", "instance_count", "divergence_count", "entropy"):
        scores = score_pool(tiny_model, pool, range(6), METHODS[name], scoring, evaluation)
        acquisition = AcquisitionConfig(
            radius=3, region=16, default_boxes=boxes, candidate_threshold=0.05,
            count_threshold=0.5,
        )  # fmt: skip
        np.testing.assert_allclose(scores.z, frame_scores(probs, name, acquisition).z, rtol=1e-6)
        assert scores.low_quality == [2, 4]
    plain = score_pool(tiny_model, pool, range(6), METHODS["divergence"],
                       ScoringConfig(batch_size=4, radius=3, region=16), evaluation)  # fmt: skip
    assert plain.gated is None and plain.low_quality == []
