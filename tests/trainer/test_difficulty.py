"""The learned difficulty head (DEAL): its target, its loss, and how it trains.

Tiny sizes throughout (64x48 inputs, width 4): each test runs in a few seconds.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from alscout.errors import ConfigError, InvalidInputError
from alscout.trainer.checkpoint import load_checkpoint, save_checkpoint
from alscout.trainer.config import TrainConfig, load_toml
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord
from alscout.trainer.difficulty import (
    DifficultyTrainingSet,
    balanced_difficulty_loss,
    error_mask,
    error_masks,
    paint_boxes,
    truth_rows,
)
from alscout.trainer.distributed import DistContext, make_loader
from alscout.trainer.model import Detector, DetectorConfig
from alscout.trainer.targets import POSITIVE, TrainingSet
from alscout.trainer.training import build_optimizer, build_scheduler, fit, train_one_epoch

SIZE = (48, 64)  # (height, width)
HEAD = DetectorConfig(width=4, head_channels=8, fires_per_level=1, difficulty_head=True)
PLAIN = DetectorConfig(width=4, head_channels=8, fires_per_level=1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def figure_scenes(root: Path, count: int, seed: int = 0) -> Dataset:
    """64x48 blurred noise with two red 20x8 'figures' each (they fit heads 1 and 2)."""
    rng = np.random.default_rng(seed)
    height, width = SIZE
    records = []
    for i in range(count):
        image = cv2.GaussianBlur(
            rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (5, 5), 0
        )
        boxes = []
        for _ in range(2):
            x, y = int(rng.integers(1, width - 9)), int(rng.integers(1, height - 21))
            cv2.rectangle(image, (x, y), (x + 7, y + 19), (230, 40, 40), -1)
            boxes.append(Box(float(x), float(y), 8.0, 20.0))
        path = root / f"scene_{seed}_{i:02d}.png"
        cv2.imwrite(str(path), image[:, :, ::-1])
        records.append(ImageRecord(i, path, width, height, tuple(boxes)))
    return Dataset(records, name=f"figures-{seed}")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Dataset:
    return figure_scenes(tmp_path_factory.mktemp("difficulty"), 8)


def config(**changes) -> TrainConfig:
    base = dict(epochs=2, batch_size=4, input_size=SIZE, lr=3e-3, lr_final=1e-3, seed=5)
    return TrainConfig(**{**base, **changes})


# ------------------------------------------------------------------ the error mask


def inside(box: tuple[float, float, float, float], height: int, width: int) -> np.ndarray:
    """Pixels whose centre (j + 0.5, i + 0.5) lies in [x, x + w) x [y, y + h): loops."""
    x, y, w, h = box
    out = np.zeros((height, width), bool)
    for i in range(height):
        for j in range(width):
            out[i, j] = x <= j + 0.5 < x + w and y <= i + 0.5 < y + h
    return out


def test_error_mask_by_hand():
    """One head whose box is 160 x 80 px at 640x480: 16 x 8 px on a 48 x 64 map."""
    height, width = SIZE
    probs = np.zeros((1, height, width), np.float32)
    probs[0, 20, 10] = 0.9  # box (6.5, 12.5, 8, 16): matches ground truth A
    probs[0, 20, 40] = 0.8  # box (36.5, 12.5, 8, 16): nothing there, a false positive
    probs[0, 40, 56] = 0.7  # on the ignore region: neither
    probs[0, 5, 5] = 0.4  # under the error threshold: no detection
    truth = np.array(
        [
            [7.0, 13.0, 8.0, 16.0],  # A, found
            [20.0, 2.0, 6.0, 14.0],  # B, missed: a false negative
            [50.0, 30.0, 12.0, 18.0],  # ignore region with a detection on it
            [2.0, 30.0, 6.0, 14.0],  # ignore region, nothing on it: no miss
        ]
    )
    ignore = np.array([False, False, True, True])
    got = error_mask(probs, truth, ignore, [(160.0, 80.0)])
    expected = inside((36.5, 12.5, 8.0, 16.0), height, width) | inside(
        (20.0, 2.0, 6.0, 14.0), height, width
    )
    np.testing.assert_array_equal(got, expected)
    assert got.sum() == 8 * 16 + 6 * 14
    # a perfect detector errs nowhere; no detector misses every real person
    clean = probs.copy()
    clean[0, 20, 40] = 0.0
    clean[0, 9, 23] = 0.95  # B found: box (19.5, 1.5, 8, 16), IoU 0.61 with B
    assert not error_mask(clean, truth, ignore, [(160.0, 80.0)]).any()
    blind = error_mask(np.zeros_like(probs), truth, ignore, [(160.0, 80.0)])
    np.testing.assert_array_equal(
        blind, inside(tuple(truth[0]), height, width) | inside(tuple(truth[1]), height, width)
    )


def test_paint_boxes_clips_to_the_map():
    mask = np.zeros((10, 12), bool)
    paint_boxes(mask, np.array([[-3.0, 8.0, 5.0, 9.0], [30.0, 1.0, 4.0, 4.0]]))
    np.testing.assert_array_equal(mask, inside((-3.0, 8.0, 5.0, 9.0), 10, 12))
    assert mask.sum() == 2 * 2


def test_truth_rows_mark_what_the_evaluation_ignores():
    boxes = [
        Box(1, 2, 8, 20),  # kept: 20 px >= 50 * 48 / 480 = 5 px, w/h 0.4
        Box(1, 2, 2, 4),  # under 5 px high
        Box(1, 2, 8, 10),  # w/h 0.8
        Box(1, 2, 8, 20, ignore=True),
        Box(1, 2, 8, 20, label="car"),
    ]
    rows = truth_rows(boxes, 48, 64, HEAD, capacity=7)
    assert rows.shape == (7, 5) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows[:5, 4], [0, 1, 1, 1, 1])
    np.testing.assert_array_equal(rows[0, :4], [1, 2, 8, 20])
    assert np.isnan(rows[5:]).all()
    with pytest.raises(InvalidInputError, match="do not fit"):
        truth_rows(boxes, 48, 64, HEAD, capacity=4)
    # error_masks skips the padding rows and takes the flag
    probs = np.zeros((1, 5, 48, 64), np.float32)
    masks = error_masks(probs, rows[None], HEAD)
    assert masks.shape == (1, 1, 48, 64)
    np.testing.assert_array_equal(masks[0, 0], inside((1, 2, 8, 20), 48, 64))


def test_balanced_loss_by_hand():
    logits = torch.tensor([[[[0.0, 2.0, -1.0, 3.0]]]])
    errors = torch.tensor([[[[True, False, False, False]]]])
    counts = torch.tensor([2.0, 3.0], dtype=torch.float64)  # another process held 2 pixels
    positive = math.log(2) / 2
    negative = math.log1p(math.exp(2.0)) + math.log1p(math.exp(-1.0)) + math.log1p(math.exp(3.0))
    expected = 0.5 * (positive + negative / 3)
    got = balanced_difficulty_loss(logits, errors, counts)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # no error anywhere: the half of the other pixels alone
    none = balanced_difficulty_loss(logits, errors & False, torch.tensor([0.0, 4.0]))
    assert float(none) == pytest.approx(0.5 * (math.log(2) + negative) / 4, rel=1e-6)


# ------------------------------------------------------------------ the training set


def test_difficulty_items_equal_training_set_items_plus_the_ground_truth(scenes):
    cfg = config(zoom_prob=1.0, photometric=0.3)
    plain = TrainingSet(scenes, HEAD, cfg)
    data = DifficultyTrainingSet(scenes, HEAD, cfg)
    assert data.capacity == 2
    for epoch in range(3):
        plain.set_epoch(epoch)
        data.set_epoch(epoch)
        for index in (0, 3, 5):
            a, b = plain[index], data[index]
            assert set(b) == set(a) | {"truth"}
            for key in ("image", "labels", "mask", "heads"):
                assert torch.equal(a[key], b[key]), (epoch, index, key)
            truth = b["truth"].numpy()
            rows = truth[~np.isnan(truth[:, 0])]
            # every positive pixel lies in a kept (not ignore) box the labels came from
            kept = np.zeros(SIZE, bool)
            paint_boxes(kept, rows[rows[:, 4] == 0, :4])
            positives = (b["labels"].numpy() == POSITIVE).any(axis=0)
            assert not (positives & ~kept).any()


def test_a_batch_without_ground_truth_cannot_train_the_head(scenes):
    detector = Detector(HEAD)
    cfg = config()
    context = DistContext(device=torch.device("cpu"))
    loader = make_loader(TrainingSet(scenes, HEAD, cfg), 4, context, True, cfg.seed)
    optimizer = build_optimizer(detector, cfg)
    scheduler = build_scheduler(optimizer, cfg, len(loader))
    with pytest.raises(InvalidInputError, match="DifficultyTrainingSet"):
        train_one_epoch(detector, loader, optimizer, scheduler, None, 0, context, False)


# ------------------------------------------------------------------ training


def test_the_head_learns_where_the_detector_errs(scenes):
    cfg = config(  # uniform negatives: losses of mined ones do not compare across epochs
        epochs=8, scale_aug=False, photometric=0.0, hard_negatives=0.0, lr=1e-2, lr_final=3e-3
    )
    result = fit(scenes, HEAD, cfg, progress=False)
    losses = [h["train"]["difficulty_loss"] for h in result.history]
    fractions = [h["train"]["error_fraction"] for h in result.history]
    assert all(math.isfinite(v) for v in losses)
    assert min(fractions) > 0.0 and max(fractions) < 0.5
    assert losses[-1] < 0.8 * losses[0], losses
    # the map is higher inside the (missed) figures than on the background
    model = result.model.eval()
    data = DifficultyTrainingSet(scenes, HEAD, cfg, augment=False)
    with torch.no_grad():
        images = torch.stack([data[i]["image"] for i in range(len(scenes))]).numpy()
        probs, difficulty = model.forward_with_difficulty(model.normalise(images))
    masks = error_masks(
        probs.numpy(), np.stack([data[i]["truth"].numpy() for i in range(len(scenes))]), HEAD
    )
    d = difficulty.numpy()
    assert d[masks].mean() > d[~masks].mean() + 0.1


def _detector_state(model: Detector) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("difficulty.")}


def test_the_head_does_not_change_what_the_detector_learns(scenes):
    """The head reads detached features: with or without it, the same detector weights
    and the same detection losses, bit for bit."""
    cfg = config(epochs=2)
    plain = fit(scenes, PLAIN, cfg, progress=False)
    head = fit(scenes, HEAD, cfg, progress=False)
    a, b = _detector_state(plain.model), _detector_state(head.model)
    assert a.keys() == b.keys() and len(b) < len(head.model.state_dict())
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for x, y in zip(plain.history, head.history, strict=True):
        assert x["train"]["loss"] == y["train"]["loss"]
        assert "difficulty_loss" not in x["train"] and "difficulty_loss" in y["train"]


def test_resume_with_the_head_equals_an_uninterrupted_run(scenes, tmp_path):
    cfg = config(epochs=2, zoom_prob=1.0)
    whole = fit(scenes, HEAD, cfg, out_dir=tmp_path / "whole", progress=False)
    half = fit(scenes, HEAD, cfg, out_dir=tmp_path / "half", stop_after=1, progress=False)
    resumed = fit(
        scenes, HEAD, cfg, out_dir=tmp_path / "half", resume=half.checkpoint, progress=False
    )
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and any(k.startswith("difficulty.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [h["train"]["difficulty_loss"] for h in whole.history] == [
        h["train"]["difficulty_loss"] for h in resumed.history
    ]
    assert load_checkpoint(resumed.checkpoint).detector.difficulty_head


# ------------------------------------------------------------------ configs and files


def test_old_configs_and_checkpoints_load_without_the_head(tmp_path):
    values = PLAIN.to_dict()
    assert values["difficulty_head"] is False
    del values["difficulty_head"]  # a config written before the field existed
    assert DetectorConfig.from_dict(values) == PLAIN
    model = Detector(PLAIN)
    path = tmp_path / "old.pt"
    from alscout.trainer.checkpoint import Checkpoint

    save_checkpoint(path, Checkpoint(model=model.state_dict(), detector=PLAIN))
    payload = torch.load(path, weights_only=True)
    del payload["detector"]["difficulty_head"]
    torch.save(payload, path)
    old = load_checkpoint(path)
    assert old.detector == PLAIN and not old.build_model().has_difficulty
    with pytest.raises(ConfigError, match="difficulty_head"):
        DetectorConfig(difficulty_head="yes")  # type: ignore[arg-type]
    toml = tmp_path / "c.toml"
    toml.write_text("[detector]\nwidth = 4\ndifficulty_head = true\n")
    detector, _ = load_toml(toml)
    assert detector.difficulty_head and Detector(detector).has_difficulty


def test_forward_stays_probs_only_and_both_come_from_one_pass():
    torch.manual_seed(0)
    model = Detector(HEAD).eval()
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        probs, difficulty = model.forward_with_difficulty(x)
        assert torch.equal(model(x), probs)
    assert probs.shape == (2, 5, *SIZE) and difficulty.shape == (2, 1, *SIZE)
    assert float(difficulty.min()) >= 0.0 and float(difficulty.max()) <= 1.0
    # the difficulty loss reaches the head only
    _, difficulty_logits = model.train().forward_logits_with_difficulty(x)
    difficulty_logits.sum().backward()
    for name, parameter in model.named_parameters():
        assert (parameter.grad is not None) == name.startswith("difficulty."), name
    with pytest.raises(InvalidInputError, match="no difficulty head"):
        Detector(PLAIN).forward_with_difficulty(x)
