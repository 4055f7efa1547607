"""Publishing with calibrated flag thresholds: ``fleet publish --calibration-frames`` and
``alscout calibrate --registry`` ship the same thresholds in the model and the registry."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from alscout.apps.cli import main
from alscout.errors import DataError
from alscout.runtime.backends import open_backend
from alscout.runtime.model_registry import ModelRegistry
from alscout.trainer.fleet.publish import calibration_frames


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """120 sharp drifting frames with noise bursts, 160x120 PNG."""
    root = tmp_path_factory.mktemp("calibration") / "frames"
    root.mkdir()
    rng = np.random.default_rng(8)
    base = cv2.resize(
        rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (160, 120),
        interpolation=cv2.INTER_NEAREST,
    )  # fmt: skip
    for i in range(120):
        image = np.roll(base, 2 * i, axis=1)
        if rng.random() < 0.3:
            image = np.clip(image + rng.normal(0, 40, image.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / f"f{i + 1}.png"), image)
    return root


def test_fleet_publish_ships_the_thresholds(folder, tiny_model, tmp_path, capsys):
    registry = tmp_path / "models"
    args = ["fleet", "publish", "--registry", str(registry), "--model", str(tiny_model)]
    assert main([*args, "--calibration-frames", str(folder), "--rates", "1%", "5%"]) == 0
    assert "calibrated on 120 frames" in capsys.readouterr().out
    version = ModelRegistry(registry).latest()
    assert version is not None
    shipped = version.metrics["calibration"]
    assert set(shipped["thresholds"]) == {"1%", "5%"} and shipped["frames"] == 120
    with open_backend(version.path, "onnxruntime-cpu") as backend:
        info = backend.model_info
    assert info.version == version.version  # stamped, and calibrated
    assert info.calibration is not None
    assert info.calibration.threshold_for(0.01) == shipped["thresholds"]["1%"]
    assert info.calibration.settings_dict()["acquisition"] == "divergence"


def test_calibrate_with_a_registry_publishes_the_same_thresholds(folder, tiny_model, tmp_path):
    model = tmp_path / "model.onnx"
    shutil.copyfile(tiny_model, model)
    registry = tmp_path / "models"
    args = ["calibrate", "--model", str(model), "--frames", str(folder), "--no-progress"]
    assert main([*args, "--rates", "1%", "5%", "--registry", str(registry)]) == 0
    with open_backend(model, "onnxruntime-cpu") as backend:  # written in place
        in_place = backend.model_info.calibration
    assert in_place is not None and in_place.frames == 120
    version = ModelRegistry(registry).latest()
    assert version is not None and version.version == "v000001"
    assert version.metrics["calibration"]["thresholds"]["5%"] == in_place.threshold_for(0.05)
    # the fleet side reads the folder with its own reader: the same pixels, thresholds
    other = tmp_path / "fleet"
    publish = ["fleet", "publish", "--registry", str(other), "--model", str(tiny_model)]
    assert main([*publish, "--calibration-frames", str(folder), "--rates", "1%", "5%"]) == 0
    fleet = ModelRegistry(other).latest()
    assert fleet is not None
    assert (
        fleet.metrics["calibration"]["thresholds"] == version.metrics["calibration"]["thresholds"]
    )


def test_calibration_frames_read_folders_and_videos(folder, tmp_path):
    frames = list(calibration_frames(folder, max_frames=5))
    assert len(frames) == 5 and frames[0].shape == (120, 160, 3)
    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for image in calibration_frames(folder, max_frames=12):
        writer.write(image[:, :, ::-1])
    writer.release()
    assert len(list(calibration_frames(video))) == 12
    assert len(list(calibration_frames(video, max_frames=4))) == 4
    with pytest.raises(DataError, match="not found"):
        list(calibration_frames(tmp_path / "missing"))
