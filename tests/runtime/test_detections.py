"""alscout.runtime.detections: the torch-free decoder the acquisition functions share."""

from __future__ import annotations

import numpy as np
import pytest

from alscout.runtime import detections
from alscout.runtime.detections import decode_detections, local_maxima

from naive.acquisition import naive_local_maxima


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("peak_radius", [0, 1, 2, 5])
def test_local_maxima_equal_the_loop_reference_with_plateaus_and_ties(seed, peak_radius):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 30, 2))
    values = (rng.integers(0, 5, (h, w)) / 4).astype(np.float32)  # plateaus and ties
    for threshold in (-1.0, 0.0, 0.3, 0.9):
        np.testing.assert_array_equal(
            local_maxima(values, threshold, peak_radius),
            naive_local_maxima(values, threshold, peak_radius),
        )


def test_the_border_counts_as_minus_infinity():
    values = np.full((3, 4), -7.0, np.float32)  # a flat map below zero: all peaks
    assert len(local_maxima(values, -10.0)) == 12
    assert len(local_maxima(values, -7.0)) == 0  # not > threshold


def test_trainer_evaluation_re_exports_the_runtime_decoder():
    from alscout.trainer.evaluation import detections as evaluation

    for name in evaluation.__all__:
        assert getattr(evaluation, name) is getattr(detections, name)


def test_decode_keeps_the_strongest_of_overlapping_heads():
    probs = np.zeros((2, 48, 64), np.float32)
    probs[0, 20, 30] = 0.9
    probs[1, 20, 31] = 0.7  # the same person seen by the neighbouring head
    boxes, scores = decode_detections(probs, ((100.0, 50.0), (90.0, 45.0)), threshold=0.5)
    assert scores.tolist() == pytest.approx([0.9])
    assert boxes.shape == (1, 4)
