"""Per-frame errors from head maps, and the rank correlation of the rank check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from alscout.errors import InvalidInputError
from alscout.trainer.al.config import EvaluationConfig
from alscout.trainer.al.pool import frame_errors, spearman
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


def test_spearman_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=50)
    b = rng.integers(0, 6, size=50).astype(float)  # many ties, like error counts
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(spearman(a, np.ones(50)))
    with pytest.raises(InvalidInputError):
        spearman(a, b[:10])
