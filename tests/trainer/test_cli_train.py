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
    assert "--resume continues the run as it was configured" in capsys.readouterr().err
    assert main([*args, "--init", str(out / "last.pt"), "--width", "8"]) == 2
    assert "cannot change the network" in capsys.readouterr().err


def test_resume_accepts_the_runs_own_settings_and_names_changes(coco, tmp_path, capsys):
    """The first command line, repeated with --resume, continues the run; only flags
    that change a setting are refused, each named with the run's value."""
    out = tmp_path / "run"
    first = ["train", "--data", str(coco), "--out", str(out), "--no-progress", "--epochs", "2"]
    first += [*SMALL, "--lr", "0.001", "--seed", "0"]
    assert main([*first, "--stop-after", "1"]) == 0
    assert load_checkpoint(out / "last.pt").epoch == 1
    capsys.readouterr()
    resume = ["--resume", str(out / "last.pt")]
    changed = ["--epochs", "5", "--input-size", "160x96", "--width", "8", "--photometric", "0.3"]
    assert main([*first, *resume, *changed]) == 2
    err = capsys.readouterr().err
    assert "--epochs 5 (the run's is 2)" in err
    assert "--photometric 0.3 (the run's is 0.2)" in err
    assert "--input-size 160x96 (the run's is 128x96)" in err
    assert "--width 8 (the run's is 4)" in err
    assert "--batch-size" not in err and "--lr" not in err  # unchanged, not named
    assert load_checkpoint(out / "last.pt").epoch == 1
    assert main([*first, *resume, "--zoom-prob", "0.5"]) == 0  # the default: no change
    assert load_checkpoint(out / "last.pt").epoch == 2


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


@pytest.fixture(scope="module")
def stills(tmp_path_factory) -> Path:
    """Four synthetic street stills at 128x96 (the generator's COCO file)."""
    out = tmp_path_factory.mktemp("synth")
    args = ["data", "synth", "--out", str(out), "--count", "4", "--size", "128x96", "--seed", "1"]
    assert main(args) == 0
    return out / "annotations.json"


def test_several_sources_with_weights_and_the_augmentation_flags(coco, stills, tmp_path, capsys):
    out = tmp_path / "mix"
    sources = ["--data", str(coco), "--frames", "1-4", "--weight", "2", "--data", str(stills)]
    sources += ["--weight", "0.5"]
    flags = ["--zoom-range", "0.8", "2.5", "--zoom-prob", "0.7", "--photometric", "0.1"]
    flags += ["--zoom-mode", "uniform", "--hard-negatives", "0.25", "--detail-loss", "2"]
    flags += ["--average-weights", "0.5"]
    args = ["train", *sources, "--out", str(out), "--no-progress", *SMALL]
    assert main([*args, *flags, "--epochs", "2", "--stop-after", "1"]) == 0
    assert capsys.readouterr().out.startswith("trained epochs=1 images=8 ")
    state = load_checkpoint(out / "last.pt")
    train = state.train
    assert train.zoom_mode == "uniform" and train.hard_negatives == 0.25
    assert train.detail_loss == 2.0 and train.average_weights == 0.5
    assert (train.scale_aug, train.zoom_range, train.zoom_prob, train.photometric) == (
        True,
        (0.8, 2.5),
        0.7,
        0.1,
    )
    assert len(state.history[0]["train"]["head_boxes"]) == 5
    resume = ["train", *sources, "--out", str(out), "--resume", str(out / "last.pt")]
    assert main([*resume, "--zoom-prob", "0.2"]) == 2  # the run keeps its augmentation
    assert "cannot take --zoom-prob 0.2 (the run's is 0.7)" in capsys.readouterr().err
    assert main([*resume, "--hard-negatives", "0"]) == 2
    assert "cannot take --hard-negatives 0.0 (the run's is 0.25)" in capsys.readouterr().err
    assert main([*resume, "--detail-loss", "3"]) == 2
    assert "cannot take --detail-loss 3.0 (the run's is 2.0)" in capsys.readouterr().err
    assert main([*resume, "--average-weights", "0.2"]) == 2
    assert "cannot take --average-weights 0.2 (the run's is 0.5)" in capsys.readouterr().err
    other = [*resume[:10], "1", *resume[11:]]  # the stills at weight 1: other data
    assert main(other) == 2
    assert "other data" in capsys.readouterr().err
    assert main([*resume, "--no-progress", "--threads", "1"]) == 0
    assert load_checkpoint(out / "last.pt").epoch == 2


def test_no_scale_aug_is_recorded_and_source_options_bind_to_their_data(coco, tmp_path, capsys):
    out = tmp_path / "plain"
    # --frames before the first --data belongs to it (the old single-source spelling)
    args = ["train", "--frames", "1-4", "--data", str(coco), "--out", str(out), *SMALL]
    assert main([*args, "--epochs", "1", "--no-scale-aug", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("trained epochs=1 images=4 ")
    train = load_checkpoint(out / "last.pt").train
    assert train.scale_aug is False and train.photometric == 0.2
    with pytest.raises(SystemExit):
        main(["train", "--data", str(coco), "--images", "a", "--images", "b", "--out", "x"])
    assert "--images given twice for --data" in capsys.readouterr().err
    assert main(["train", "--out", str(out), *SMALL]) == 2
    assert "give at least one --data" in capsys.readouterr().err
    assert main(["train", "--data", str(coco), "--out", str(out), "--zoom-prob", "2"]) == 2
    assert "zoom_prob" in capsys.readouterr().err


def test_difficulty_head_flag_trains_and_records_the_head(coco, tmp_path, capsys):
    out = tmp_path / "hard"
    args = ["train", "--data", str(coco), "--out", str(out), *SMALL, "--epochs", "1"]
    assert main([*args, "--difficulty-head", "--no-progress"]) == 0
    state = load_checkpoint(out / "last.pt")
    assert state.detector.difficulty_head is True
    assert "difficulty_loss" in json.loads((out / "history.json").read_text())[0]["train"]
    init = ["--init", str(out / "last.pt"), "--difficulty-head"]
    assert main(["train", "--data", str(coco), "--out", str(tmp_path / "x"), *SMALL, *init]) == 2
    assert "cannot change the network of --init" in capsys.readouterr().err


def test_evaluate_zoom_on_a_tiny_synthetic_set(stills, tmp_path, capsys):
    out = tmp_path / "run"
    train = ["train", "--data", str(stills), "--out", str(out), "--epochs", "1", *SMALL]
    assert main([*train, "--no-progress"]) == 0
    capsys.readouterr()
    results = {}
    for factor in ("0.5", "1", "2"):
        report = tmp_path / f"zoom{factor}.json"
        evaluate = ["evaluate", "--checkpoint", str(out / "last.pt"), "--data", str(stills)]
        args = [*evaluate, "--zoom", factor, "--out-json", str(report), "--no-progress"]
        assert main([*args, "--threads", "1"]) == 0
        assert capsys.readouterr().out.startswith("images=4 people=")
        results[factor] = json.loads(report.read_text())
    # Zooming changes which people a head can represent: the counts move.
    counts = {f: (r["num_gt"], r["num_ignore_gt"]) for f, r in results.items()}
    assert len(set(counts.values())) > 1, counts
    assert all(0.0 <= r["lamr"] <= 1.0 for r in results.values())
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", str(out / "last.pt"), "--data", str(stills), "--zoom"])
    bad = ["evaluate", "--checkpoint", str(out / "last.pt"), "--data", str(stills)]
    assert main([*bad, "--zoom", "0", "--no-progress"]) == 2
    assert "zoom factor" in capsys.readouterr().err
