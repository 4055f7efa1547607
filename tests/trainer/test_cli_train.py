from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from alscout.apps.cli import main
from alscout.trainer.checkpoint import load_checkpoint
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord
from alscout.trainer.data.coco import write_coco

SMALL = ["--input-size", "128x96", "--width", "4", "--batch-size", "4", "--threads", "1"]


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # --threads changes the whole process


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    """Eight 128x96 noise images with two red 'pedestrians' each, as a COCO file."""
    root = tmp_path_factory.mktemp("coco")
    rng = np.random.default_rng(0)
    records = []
    for i in range(8):
        image = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        boxes = []
        for h, w in ((28, 15), (16, 9)):
            x, y = int(rng.integers(0, 128 - w)), int(rng.integers(0, 96 - h))
            cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), (30, 30, 220), -1)
            boxes.append(Box(x, y, w, h))
        path = root / f"{i}.png"
        cv2.imwrite(str(path), image)
        records.append(ImageRecord(i + 1, path, 128, 96, tuple(boxes)))
    return write_coco(Dataset(records), root / "train.json")


def test_train_then_evaluate_through_the_command_line(coco, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(coco), "--out", str(out), "--epochs", "2", *SMALL])
    assert code == 0
    line = capsys.readouterr().out
    assert line.startswith("trained epochs=2 images=8 ") and "last.pt" in line
    state = load_checkpoint(out / "last.pt")
    assert state.epoch == 2 and state.detector.width == 4 and state.train.input_size == (96, 128)
    assert len(json.loads((out / "history.json").read_text())) == 2
    results = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(out / "last.pt"),
            "--data",
            str(coco),
            "--frames",
            "3-8",
            "--out-json",
            str(results / "eval.json"),
            "--plot",
            str(results / "curve.png"),
            "--detections",
            str(results / "dets.json"),
            "--no-progress",
        ]
    )
    assert code == 0
    summary = capsys.readouterr().out
    assert summary.startswith("images=6 people=12 ") and "LAMR=" in summary
    result = json.loads((results / "eval.json").read_text())
    assert result["num_images"] == 6 and 0.0 <= result["lamr"] <= 1.0
    assert (results / "curve.png").stat().st_size > 0
    dets = json.loads((results / "dets.json").read_text())
    assert {d["image_id"] for d in dets} <= set(range(3, 9))


def test_stop_and_resume_through_the_command_line(coco, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(coco), "--out", str(out), "--no-progress"]
    assert main([*args, "--epochs", "2", "--stop-after", "1", *SMALL]) == 0
    assert load_checkpoint(out / "last.pt").epoch == 1
    assert main([*args, "--resume", str(out / "last.pt"), "--threads", "1"]) == 0
    assert load_checkpoint(out / "last.pt").epoch == 2
    capsys.readouterr()
    assert main([*args, "--resume", str(out / "last.pt"), "--epochs", "5"]) == 2
    assert "--resume continues the run" in capsys.readouterr().err
    assert main([*args, "--init", str(out / "last.pt"), "--width", "8"]) == 2
    assert "cannot change the network" in capsys.readouterr().err


def test_bad_input_ends_in_one_line_and_status_2(coco, tmp_path, capsys):
    out = ["--out", str(tmp_path / "run"), *SMALL]
    assert main(["train", "--data", str(coco), "--frames", "5-20", *out]) == 2
    assert "has 8 images" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "none.json"), *out]) == 2
    assert "none.json" in capsys.readouterr().err
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[train]\nepochs = 0\n")
    assert main(["train", "--data", str(coco), "--config", str(bad_toml), *out]) == 2
    assert "epochs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--data", str(coco), "--input-size", "big", "--out", "x"])
    assert main(["evaluate", "--checkpoint", str(tmp_path / "no.pt"), "--data", str(coco)]) == 2
    assert "no.pt" in capsys.readouterr().err


def test_the_command_line_imports_no_pytorch_until_a_command_runs():
    code = "import sys, alscout.apps.cli as c; c.build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.slow
def test_trains_and_evaluates_on_real_pets_frames(pets_dir, tmp_path, capsys):
    gt, video = pets_dir / "gt.txt", pets_dir / "vtest.avi"
    out = tmp_path / "pets"
    data = ["--data", str(gt), "--images", str(video)]
    train = ["train", *data, "--frames", "1-24", "--out", str(out), "--epochs", "1"]
    assert main([*train, "--cache-images", "--no-progress", *SMALL[:2], "--threads", "1"]) == 0
    capsys.readouterr()
    evaluate = ["evaluate", "--checkpoint", str(out / "last.pt"), *data, "--frames", "601-610"]
    assert main([*evaluate, "--no-progress", "--threads", "1"]) == 0
    summary = capsys.readouterr().out
    assert summary.startswith("images=10 people=")
