from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from alscout.errors import DataError
from alscout.export.calibration import CalibrationBatches, make_calibrator
from alscout.runtime.model_info import ModelInfo, Normalisation

INFO = ModelInfo(
    name="m",
    version="1",
    num_heads=1,
    default_boxes=((10, 5),),
    input_size=(24, 32),
    normalisation=Normalisation(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
    training_data_digest="d",
)


@pytest.fixture
def folder(tmp_path) -> Path:
    for i in range(7):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((48, 64, 3), 20 * i, np.uint8))
    return tmp_path


def test_batches_are_full_normalised_and_at_the_input_size(folder):
    batches = CalibrationBatches(folder, INFO, batch_size=3, limit=100)
    got = list(batches)
    assert len(got) == 2  # 7 frames: the last incomplete batch is dropped
    assert all(b.shape == batches.shape == (3, 3, 24, 32) for b in got)
    assert got[0].dtype == np.float32
    np.testing.assert_allclose(got[1][0], (60 / 255 - 0.5) / 0.25, atol=1e-5)
    assert len(list(batches)) == 2  # iterating again starts over
    assert batches.profile().min == (3, 24, 32) == batches.profile().max


def test_limit_applies_before_batching(folder):
    assert len(list(CalibrationBatches(folder, INFO, batch_size=2, limit=4))) == 2


def test_digest_names_the_set(folder):
    a = CalibrationBatches(folder, INFO, batch_size=3).digest()
    assert a == CalibrationBatches(folder, INFO, batch_size=3).digest()
    assert a != CalibrationBatches(folder, INFO, batch_size=2).digest()
    cv2.imwrite(str(folder / "9.png"), np.zeros((4, 4, 3), np.uint8))
    assert a != CalibrationBatches(folder, INFO, batch_size=3).digest()


def test_unpadded_names_are_calibrated_in_natural_order(tmp_path):
    for i in range(12):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((48, 64, 3), 20 * i, np.uint8))
    batches = CalibrationBatches(tmp_path, INFO, batch_size=1, limit=3, stride=5)
    got = [float(b[0, 0, 0, 0]) for b in batches]  # frames 0, 5, 10
    np.testing.assert_allclose(got, [(20 * i / 255 - 0.5) / 0.25 for i in (0, 5, 10)], atol=1e-5)


def test_digest_counts_only_the_frames(folder):
    a = CalibrationBatches(folder, INFO, batch_size=3).digest()
    (folder / "._0.png").write_bytes(b"macOS metadata, not an image")
    (folder / "notes.txt").write_text("not a frame")
    assert a == CalibrationBatches(folder, INFO, batch_size=3).digest()


def test_too_few_frames_is_a_data_error(folder, tmp_path):
    with pytest.raises(DataError, match="not one calibration batch"):
        list(CalibrationBatches(folder, INFO, batch_size=8, limit=8))
    with pytest.raises(DataError, match="limit >= batch_size"):
        CalibrationBatches(folder, INFO, batch_size=8, limit=4)


def test_batches_from_a_video(pets_video):
    batches = CalibrationBatches(pets_video, INFO, batch_size=4, limit=8, stride=50)
    got = list(batches)
    assert len(got) == 2 and got[0].shape == (4, 3, 24, 32)
    assert len(batches.digest()) == 64


def test_calibrator_needs_tensorrt(folder):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        from alscout.errors import BackendUnavailableError

        with pytest.raises(BackendUnavailableError, match="tensorrt is not installed"):
            make_calibrator(CalibrationBatches(folder, INFO, batch_size=3))
        return
    pytest.skip("tensorrt is installed: the calibrator runs in test_tensorrt's GPU tests")
