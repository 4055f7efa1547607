"""``alscout evaluate``: which ground truth counts (SPEC §3, the Caltech protocol)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from alscout.apps.cli import main
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord
from alscout.trainer.model import Detector, DetectorConfig
from alscout.trainer.targets import centred_iou
from alscout.trainer.training import evaluate

DOCS = Path(__file__).resolve().parents[2] / "docs" / "detector.md"


def test_evaluation_ignores_what_the_paper_filters_drop_not_what_no_head_fits(tmp_path):
    """A 460x230 person passes the filters but fits no head (centred IoU < 0.5 with every
    default box): it still counts, so the figures do not depend on the network's heads."""
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), np.zeros((480, 640, 3), np.uint8))
    tall = Box(100, 10, 230, 460)
    short = Box(400, 100, 20, 40)  # under 50 px
    square = Box(500, 200, 100, 100)  # w/h 1.0, outside [0.2, 0.65]
    data = Dataset([ImageRecord(0, path, 640, 480, (tall, short, square))])
    detector = Detector(DetectorConfig(width=4))
    boxes = np.asarray(detector.config.boxes_at(480, 640))
    assert centred_iou(np.array([460.0]), np.array([230.0]), boxes).max() < 0.5
    result, _ = evaluate(detector, data, (480, 640), batch_size=1)
    assert (result.num_gt, result.num_ignore_gt) == (1, 2)
    everything, _ = evaluate(detector, data, (480, 640), paper_filters=False, batch_size=1)
    assert (everything.num_gt, everything.num_ignore_gt) == (3, 0)


def test_no_filter_help_and_docs_say_what_evaluation_ignores(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "no head fits" not in text
    assert "under 50 px" in text and "[0.2, 0.65]" in text
    docs = " ".join(DOCS.read_text().split("## Detection and evaluation")[1].split())
    assert "no head can represent" not in docs
    assert "fits no head" in docs and "still counts" in docs


def test_evaluating_with_another_box_rule_than_training_warns(tmp_path, caplog):
    from alscout.trainer.checkpoint import Checkpoint, save_checkpoint
    from alscout.trainer.config import TrainConfig
    from alscout.trainer.targets import TargetConfig

    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--count", "2"]) == 0
    tiny = DetectorConfig(width=4, head_channels=16, fires_per_level=1)
    old = TrainConfig(input_size=(120, 160), targets=TargetConfig(fit_aspect=None))
    checkpoint = save_checkpoint(
        tmp_path / "old.pt", Checkpoint(Detector(tiny).state_dict(), tiny, train=old)
    )
    args = ["evaluate", "--checkpoint", str(checkpoint), "--no-progress"]
    args += ["--data", str(tmp_path / "s" / "annotations.json")]
    with caplog.at_level("WARNING"):
        assert main(args) == 0
    assert "trained to fit boxes as given" in caplog.text
    assert "--aspect-ratio none matches its training" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main([*args, "--aspect-ratio", "none"]) == 0
    assert "trained to fit" not in caplog.text


def test_evaluate_runs_the_network_where_device_says(tmp_path, capsys):
    """``--device cpu`` evaluates; a device this machine lacks or a bad name fails clearly."""
    import torch

    from alscout.trainer.checkpoint import Checkpoint, save_checkpoint
    from alscout.trainer.config import TrainConfig

    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--count", "2"]) == 0
    tiny = DetectorConfig(width=4, head_channels=16, fires_per_level=1)
    checkpoint = save_checkpoint(
        tmp_path / "tiny.pt",
        Checkpoint(Detector(tiny).state_dict(), tiny, train=TrainConfig(input_size=(120, 160))),
    )
    args = ["evaluate", "--checkpoint", str(checkpoint), "--no-progress"]
    args += ["--data", str(tmp_path / "s" / "annotations.json")]
    assert main([*args, "--device", "cpu"]) == 0
    assert "MR@FPPI=1" in capsys.readouterr().out
    assert main([*args, "--device", "tpu"]) != 0
    assert "cpu, cuda or cuda:N" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*args, "--device", "cuda"]) != 0
        assert "CUDA is not available" in capsys.readouterr().err
