"""``alscout score --target-rate 1%`` starts from the model's shipped threshold (issue #15).

As ``alscout serve --target-rate`` (tests/server/test_target_rate.py): calibrated with
``alscout calibrate`` on PETS09 frames 1-300, the recording scored off-line is frames
301-795, which calibration never saw. ``tiny_model`` has seeded random weights (no
trained detector is in tests/assets); the claim is that the threshold transfers.
"""

from __future__ import annotations

import shutil

import cv2
import pytest
from recordings import read_outputs

from alscout.apps.cli import main

CALIBRATION = 300


@pytest.fixture(scope="module")
def pets_folders(pets_video, tmp_path_factory):
    """Frames 1-300 and 301-795 of PETS09 as two JPEG folders."""
    root = tmp_path_factory.mktemp("pets")
    calibration, recording = root / "frames-1-300", root / "pets"
    calibration.mkdir()
    recording.mkdir()
    capture = cv2.VideoCapture(str(pets_video))
    index = 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        folder = calibration if index < CALIBRATION else recording
        cv2.imwrite(str(folder / f"{index + 1:06d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        index += 1
    capture.release()
    assert index == 795
    return calibration, recording


def test_score_with_a_target_rate_flags_on_target_from_the_first_frames(
    pets_folders, tiny_model, tmp_path
):
    calibration, recording = pets_folders
    model = tmp_path / "model.onnx"
    shutil.copyfile(tiny_model, model)
    assert (
        main(["calibrate", "--model", str(model), "--frames", str(calibration), "--no-progress"])
        == 0
    )
    out = tmp_path / "out"
    argv = ["score", str(recording), "--model", str(model), "--out", str(out)]
    assert main([*argv, "--target-rate", "1%", "--workers", "1", "--no-progress"]) == 0
    decisions = read_outputs(out)["decisions"]
    assert len(decisions) == 795 - CALIBRATION
    assert not any(d["reason"] == "warming_up" for d in decisions)
    assert len({d["threshold"] for d in decisions}) == 1  # the shipped one, all along
    flagged = [i for i, d in enumerate(decisions) if d["decision"] == "flagged"]
    assert 0.005 <= len(flagged) / len(decisions) <= 0.02, flagged
    half = len(decisions) // 2
    assert flagged[0] < 100 and 0.005 <= sum(f < half for f in flagged) / half <= 0.02, flagged


def test_a_target_rate_with_a_numeric_threshold_is_refused(tiny_model, tmp_path, capsys):
    argv = ["score", str(tmp_path), "--model", str(tiny_model), "--out", str(tmp_path / "o")]
    assert main([*argv, "--target-rate", "1%", "--threshold", "0.5"]) == 2
    assert "--target-rate sets the adaptive threshold" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
