"""bench/target_rate.py: calibrate on one frame range, score another, count the flags."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """120 frames of drifting blurred noise, 160x120, MJPG."""
    path = tmp_path_factory.mktemp("video") / "drive.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (160, 120))
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (120, 400, 3), dtype=np.uint8), (9, 9), 0)
    for i in range(120):
        writer.write(np.ascontiguousarray(base[:, 2 * i : 2 * i + 160]))
    writer.release()
    return path


def test_write_frames_keeps_the_range_and_refuses_an_empty_one(video, tmp_path, bench_script):
    bench = bench_script("target_rate")
    assert bench.write_frames(video, (11, 20), tmp_path / "a") == 10
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names[0] == "000011.jpg" and names[-1] == "000020.jpg"
    with pytest.raises(SystemExit, match="no frames"):
        bench.write_frames(video, (500, 600), tmp_path / "b")


def test_a_fold_ships_thresholds_and_scores_from_the_first_frame(
    video, tiny_model, tmp_path, bench_script
):
    bench = bench_script("target_rate")
    before = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    result = bench.run_fold(tiny_model, video, (1, 60), (61, 120), 0.01, tmp_path, threads=1)
    assert result.frames == 60 and result.warming_up == 0  # the shipped threshold holds
    assert set(result.thresholds) == {0.005, 0.01, 0.02}
    assert all(0 <= f < 60 for f in result.flagged)
    assert result.rate() == len(result.flagged) / 60
    row = result.row(0.01)
    assert row.startswith("| 1-60 | 61-120 | ") and f"{len(result.flagged)} of 60" in row
    assert row.count(" / ") == bench.PARTS - 1
    assert hashlib.sha256(tiny_model.read_bytes()).hexdigest() == before  # a copy calibrated
