from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from alscout.errors import ConfigError, InvalidInputError
from alscout.trainer.config import TrainConfig
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord
from alscout.trainer.model import DetectorConfig
from alscout.trainer.targets import (
    IGNORE,
    NEGATIVE,
    POSITIVE,
    TargetConfig,
    TrainingSet,
    assign_head,
    centred_iou,
    count_heads,
    fit_ious,
    head_balanced_zoom,
    head_factors,
    make_targets,
    sample_loss_pixels,
    sample_pixels,
    scale_negative_mask,
)

PAPER = DetectorConfig()
BOXES_640 = PAPER.boxes_at(480, 640)


def test_centred_iou_by_hand():
    defaults = np.array([[100.0, 50.0], [50.0, 25.0]])
    iou = centred_iou(np.array([100.0, 50.0, 80.0]), np.array([50.0, 25.0, 40.0]), defaults)
    np.testing.assert_allclose(iou[0], [1.0, 0.25])
    np.testing.assert_allclose(iou[1], [0.25, 1.0])
    # 80x40 inside 100x50: 3200 / 5000; 50x25 inside 80x40: 1250 / 3200
    np.testing.assert_allclose(iou[2], [0.64, 1250 / 3200])


@pytest.mark.parametrize(
    ("box", "head", "fits"),
    [
        (Box(0, 0, 160, 270), 0, [0, 1]),
        (Box(0, 0, 100, 250), 1, [0, 1]),  # IoU .58 with 270x160, .71 with 225x130
        (Box(0, 0, 80, 145), 2, [2]),
        (Box(0, 0, 50, 80), 3, [3]),
        # A PETS-like 67x27 pedestrian: closer in height to 80x50, but only the
        # 55x31 box overlaps it enough to count as a hit (IoU .73 vs .45).
        (Box(0, 0, 27, 67), 4, [4]),
    ],
)
def test_assign_head_as_given_picks_the_default_box_of_highest_centred_iou(box, head, fits):
    got, fitting = assign_head(box, BOXES_640, 50.0, TargetConfig(fit_aspect=None))
    assert got == head
    assert list(np.flatnonzero(fitting)) == fits


@pytest.mark.parametrize(
    ("box", "head", "fits"),
    [
        (Box(0, 0, 160, 270), 0, [0, 1]),  # (225 / 270)^2 = .69
        (Box(0, 0, 100, 250), 0, [0, 1]),  # (250 / 270)^2 = .86, (225 / 250)^2 = .81
        (Box(0, 0, 80, 145), 2, [2]),
        (Box(0, 0, 50, 80), 3, [3]),  # (55 / 80)^2 = .47
        # The PETS-like 67x27 pedestrian: by height it trains 80x50 ((67 / 80)^2 = .70),
        # whose box is a hit on it once the evaluation standardises widths; 55x31 fits
        # too ((55 / 67)^2 = .67).
        (Box(0, 0, 27, 67), 3, [3, 4]),
        (Box(0, 0, 22, 110), 2, [2, 3]),  # w/h .2 fits by height: .58 and (80 / 110)^2 = .53
    ],
)
def test_assign_head_standardised_fits_on_height(box, head, fits):
    config = TargetConfig()
    assert config.fit_aspect == 0.41
    got, fitting = assign_head(box, BOXES_640, 50.0, config)
    assert got == head
    assert list(np.flatnonzero(fitting)) == fits
    ious = fit_ious(np.array([box.h]), np.array([box.w]), BOXES_640, config)[0]
    heights = BOXES_640[:, 0]
    expected = (np.minimum(heights, box.h) / np.maximum(heights, box.h)) ** 2
    np.testing.assert_allclose(ious, expected)


@pytest.mark.parametrize(
    "box",
    [
        Box(0, 0, 20, 45),  # under 50 px
        Box(0, 0, 60, 80),  # w/h 0.75
        Box(0, 0, 12, 100),  # w/h 0.12
        Box(0, 0, 40, 80, ignore=True),
        Box(0, 0, 40, 80, label="car"),
        Box(0, 0, 230, 500),  # taller than any default box fits
    ],
)
@pytest.mark.parametrize("fit_aspect", [0.41, None])
def test_boxes_that_fit_no_head_are_not_trained(box, fit_aspect):
    head, fits = assign_head(box, BOXES_640, 50.0, TargetConfig(fit_aspect=fit_aspect))
    assert head == -1 and not fits.any()


def test_a_thin_box_fits_no_head_as_given():
    # w/h .2: too thin to overlap any default box by 0.5 as given (by height: head 2)
    head, fits = assign_head(Box(0, 0, 22, 110), BOXES_640, 50.0, TargetConfig(fit_aspect=None))
    assert head == -1 and not fits.any()


def test_positive_centre_ignore_ring_and_negatives():
    box = Box(100, 100, 46, 80)  # 80x46 -> head 3 (80x50) only; centre (123, 140)
    labels = make_targets([box], 480, 640, PAPER)
    assert labels.shape == (5, 480, 640) and labels.dtype == np.int8
    pos = np.argwhere(labels[3] == POSITIVE)
    # centre_fraction 0.2: |x + 0.5 - 123| <= 4.6 and |y + 0.5 - 140| <= 8
    assert pos[:, 1].min() == 118 and pos[:, 1].max() == 127
    assert pos[:, 0].min() == 132 and pos[:, 0].max() == 147
    assert len(pos) == 10 * 16
    ring = labels[3, 120:160, 111:135]  # ignore_fraction 0.5: |dx| <= 11.5, |dy| <= 20
    assert set(np.unique(ring)) == {POSITIVE, IGNORE}
    assert (labels[3] == IGNORE).sum() == 40 * 24 - 10 * 16
    assert labels[3, 140, 110] == NEGATIVE and labels[3, 140, 135] == NEGATIVE
    assert (labels[[0, 1, 2, 4]] == NEGATIVE).all()  # fits head 3 only


def test_other_fitting_heads_ignore_the_centre_instead_of_learning_it_as_negative():
    box = Box(300, 50, 100, 236)  # head 1 ((225 / 236)^2 = .91), fits head 0 (.76) as well
    labels = make_targets([box], 480, 640, PAPER)
    cy, cx = 168, 350
    assert labels[1, cy, cx] == POSITIVE
    assert labels[0, cy, cx] == IGNORE
    assert (labels[0] != POSITIVE).all()
    assert labels[2, cy, cx] == NEGATIVE


def test_untrainable_boxes_are_ignored_in_every_head_over_their_whole_area():
    labels = make_targets(
        [Box(10.5, 20, 30, 30), Box(200, 200, 40, 80, ignore=True)], 480, 640, PAPER
    )
    assert (labels[:, 20:50, 10:41] == IGNORE).all()
    assert (labels[:, 200:280, 200:240] == IGNORE).all()
    assert (labels == IGNORE).sum() == 5 * (30 * 31 + 80 * 40)
    assert not (labels == POSITIVE).any()


def test_positives_win_over_ignore_regions():
    pedestrian = Box(100, 100, 40, 80)
    crowd = Box(90, 90, 100, 100, ignore=True)
    labels = make_targets([crowd, pedestrian], 480, 640, PAPER)
    assert labels[3, 140, 120] == POSITIVE
    assert labels[0, 140, 120] == IGNORE


def test_boxes_cut_by_the_border_and_tiny_centre_regions():
    labels = make_targets([Box(-10, 440, 40, 80)], 480, 640, PAPER)  # centre (10, 480)
    assert labels.shape == (5, 480, 640)
    assert (labels[3, 472:, 6:14] == POSITIVE).all()
    one = make_targets(
        [Box(100.2, 100.2, 40, 80)], 480, 640, PAPER, TargetConfig(0, centre_fraction=0.0)
    )
    assert np.argwhere(one == POSITIVE).tolist() == [[3, 140, 120]]  # the pixel holding the centre
    gone = make_targets([Box(700, 100, 40, 80)], 480, 640, PAPER)
    assert (gone == NEGATIVE).all()


def test_sizes_are_measured_at_the_input_size_with_scaled_defaults():
    # At 320x240 the defaults halve and so does the 50 px minimum height.
    small = Box(50, 50, 20, 40)  # 40x20: the 80x50 box at half size
    labels = make_targets([small], 240, 320, PAPER)
    assert (labels[3] == POSITIVE).any()
    at_full = make_targets([small], 480, 640, PAPER)
    assert not (at_full == POSITIVE).any()  # 40 px is under 50 at 640x480


def test_sample_pixels_keeps_positives_and_n2p_negatives_per_head():
    labels = make_targets([Box(100, 100, 40, 80), Box(300, 50, 100, 250)], 480, 640, PAPER)
    mask = sample_pixels(labels, 15, 32, np.random.default_rng(0))
    assert mask.shape == labels.shape and mask.dtype == bool
    for k in range(5):
        positives = int((labels[k] == POSITIVE).sum())
        assert (mask[k] & (labels[k] == POSITIVE)).sum() == positives
        wanted = 15 * positives if positives else 32
        assert (mask[k] & (labels[k] == NEGATIVE)).sum() == wanted
    assert not (mask & (labels == IGNORE)).any()


def test_sample_pixels_is_seeded_and_takes_all_negatives_when_few():
    labels = np.full((2, 6, 6), NEGATIVE, dtype=np.int8)
    labels[0, 2, 2] = POSITIVE
    labels[1, :3] = IGNORE
    a = sample_pixels(labels, 3, 5, np.random.default_rng(7))
    b = sample_pixels(labels, 3, 5, np.random.default_rng(7))
    c = sample_pixels(labels, 3, 5, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a[0].sum() == 1 + 3 and a[1].sum() == 5
    everything = sample_pixels(labels, 100, 100, np.random.default_rng(0))
    assert everything[0].all() and everything[1].sum() == 18
    with pytest.raises(InvalidInputError):
        sample_pixels(labels[0], 3, 5, np.random.default_rng(0))


def test_sample_pixels_leaves_the_hard_share_to_the_training_step():
    labels = make_targets([Box(100, 100, 40, 80), Box(300, 50, 100, 250)], 480, 640, PAPER)
    for share in (0.0, 0.3, 1.0):
        mask, hard = sample_loss_pixels(labels, 15, 32, np.random.default_rng(0), share)
        assert np.array_equal(mask, sample_pixels(labels, 15, 32, np.random.default_rng(0), share))
        for k in range(5):
            positives = int((labels[k] == POSITIVE).sum())
            wanted = 15 * positives if positives else 32
            drawn = int((mask[k] & (labels[k] == NEGATIVE)).sum())
            assert (drawn, int(hard[k])) == (wanted - round(share * wanted), round(share * wanted))
    few = np.full((1, 3, 3), NEGATIVE, dtype=np.int8)
    few[0, 1, 1] = POSITIVE  # wants 15 negatives, has 8: all drawn, none left to mine
    mask, hard = sample_loss_pixels(few, 15, 32, np.random.default_rng(0), hard_fraction=0.5)
    assert mask.all() and hard.tolist() == [0]
    with pytest.raises(InvalidInputError, match="hard_fraction"):
        sample_pixels(labels, 15, 32, np.random.default_rng(0), hard_fraction=1.5)


@pytest.mark.parametrize(
    "changes",
    [
        {"min_height": -1},
        {"aspect_range": (0.7, 0.2)},
        {"fit_iou": 0.0},
        {"share_iou": 0.4},
        {"share_iou": 1.2},
        {"centre_fraction": 0.6, "ignore_fraction": 0.5},
    ],
)
def test_target_config_rejects_bad_values(changes):
    with pytest.raises(ConfigError):
        TargetConfig(**changes)


def _small_people(root, count: int = 12) -> Dataset:
    """240x320 noise images, each with four 'people' 30-50 px tall (heads 3 and 4 at
    this size: 40x25 and 27.5x15.5), as PNG files."""
    rng = np.random.default_rng(5)
    records = []
    for i in range(count):
        image = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (5, 5), 0)
        boxes = []
        for h in (30, 40, 45, 50):
            w = round(0.55 * h)
            x, y = int(rng.integers(0, 320 - w)), int(rng.integers(0, 240 - h))
            image[y : y + h, x : x + w] = (200, 40, 40)
            boxes.append(Box(x, y, w, h))
        path = root / f"{i}.png"
        cv2.imwrite(str(path), image)
        records.append(ImageRecord(i, path, 320, 240, tuple(boxes)))
    return Dataset(records, name="small-people")


def _boxes_per_head(data: Dataset, train: TrainConfig, epochs: int) -> np.ndarray:
    items = TrainingSet(data, PAPER, train)
    total = np.zeros(PAPER.num_heads, dtype=np.int64)
    for epoch in range(epochs):
        items.set_epoch(epoch)
        for i in range(len(items)):
            item = items[i]
            heads = item["heads"].numpy()
            positive = (item["labels"].numpy() == POSITIVE).any(axis=(1, 2))
            assert np.array_equal(heads > 0, positive)  # counted heads are trained heads
            total += heads
    return total


def test_detail_loss_softens_training_images_and_moves_no_label(tmp_path):
    data = _small_people(tmp_path, count=2)
    plain = TrainConfig(input_size=(240, 320), scale_aug=False, photometric=0.0)
    with pytest.raises(ConfigError, match="detail_loss"):
        replace(plain, detail_loss=0.5)
    soft = replace(plain, detail_loss=4.0)
    for i in range(2):
        a, b = TrainingSet(data, PAPER, plain)[i], TrainingSet(data, PAPER, soft)[i]
        assert np.array_equal(a["labels"].numpy(), b["labels"].numpy())
        assert np.array_equal(a["heads"].numpy(), b["heads"].numpy())
        edges = [np.abs(np.diff(x["image"].numpy().astype(float), axis=1)).mean() for x in (a, b)]
        assert edges[1] < 0.8 * edges[0], edges  # less detail, same people


def test_zoom_gives_every_head_positives_where_mirroring_alone_starves_the_big_heads(tmp_path):
    data = _small_people(tmp_path)
    assert count_heads(data[0].boxes, 240, 320, PAPER).tolist() == [0, 0, 0, 3, 1]
    # Head 0 (135x80 here) needs a zoom of about 2.4 or more on the tallest.
    plain = TrainConfig(input_size=(240, 320), scale_aug=False, photometric=0.0)
    off = _boxes_per_head(data, plain, epochs=2)
    assert off[:3].tolist() == [0, 0, 0] and off[3] > 0 and off[4] > 0  # the failure
    recipe = TrainConfig(input_size=(240, 320))  # the default: head-balanced zoom, half the images
    on = _boxes_per_head(data, recipe, epochs=10)
    assert (on > 0).all(), on


@pytest.mark.parametrize("fit_aspect", [0.41, None])
@pytest.mark.parametrize("aspect", [0.25, 0.35, 0.41, 0.55, 0.65])
def test_head_factors_are_where_assign_head_picks_each_head(aspect, fit_aspect):
    config, boxes = TargetConfig(fit_aspect=fit_aspect), PAPER.boxes_at(360, 480)
    box = Box(10, 10, aspect * 60, 60)
    factors = head_factors(box, boxes, 37.5, config, (0.25, 8.0))
    assert factors.shape == (5, 2)
    reached = 0
    for k, (low, high) in enumerate(factors):
        if np.isnan(low):
            continue
        reached += 1
        for f in (low, np.sqrt(low * high), high):
            assert assign_head(box.scaled(f, f), boxes, 37.5, config)[0] == k, (k, f)
        for f in (low * 0.97, high * 1.03):  # just outside: another head, or none
            if 0.25 <= f <= 8.0:
                assert assign_head(box.scaled(f, f), boxes, 37.5, config)[0] != k, (k, f)
    if fit_aspect is None:  # as given, very narrow boxes fit one head at most
        assert reached == (1 if aspect < 0.3 else 5)
    else:  # standardised: the fit is on height, every head is reachable
        assert reached == 5
    ignored = Box(10, 10, aspect * 60, 60, ignore=True)
    assert np.isnan(head_factors(ignored, boxes, 37.5, config, (0.25, 8.0))).all()


def test_head_balanced_zoom_trains_every_head_about_equally_with_narrow_people():
    # PETS-like: w/h 0.35, 40-70 px at 360x480. Narrow people fit the narrower head 1
    # better than head 0 at head 0's own height; sampling by height alone starved it.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    boxes = [Box(40 + 90 * i, 100, 0.35 * h, h) for i, h in enumerate((40, 50, 60, 70))]
    train = TrainConfig(input_size=(360, 480))
    chosen = np.zeros(5, dtype=np.int64)
    for seed in range(250):
        draws = np.random.default_rng([seed, 1])
        zoomed, moved, head = head_balanced_zoom(image, boxes, draws, PAPER, train)
        again = head_balanced_zoom(image, boxes, np.random.default_rng([seed, 1]), PAPER, train)
        assert np.array_equal(zoomed, again[0]) and moved == again[1] and head == again[2]
        assert zoomed.shape == image.shape and head >= 0
        assert count_heads(moved, 360, 480, PAPER)[head] >= 1, (seed, head)
        chosen[head] += 1
    assert chosen.min() >= 250 / 5 * 0.6, chosen


def test_head_balanced_zoom_without_trainable_people_zooms_uniformly():
    image = np.zeros((120, 160, 3), np.uint8)
    boxes = [Box(10, 10, 40, 20)]  # wider than tall: no head, at any scale
    train = TrainConfig(input_size=(120, 160))
    _, moved, head = head_balanced_zoom(image, boxes, np.random.default_rng(1), PAPER, train)
    assert head == -1 and len(moved) <= 1


def test_share_iou_makes_a_neighbour_that_fits_loosely_learn_the_centre_as_negative():
    box = Box(300, 100, 80, 200)  # head 1 (.79); fits head 0 (.55) and head 2 (.53)
    cy, cx = 200, 340
    loose = make_targets([box], 480, 640, PAPER)
    assert loose[1, cy, cx] == POSITIVE
    assert loose[0, cy, cx] == IGNORE and loose[2, cy, cx] == IGNORE
    strict = TargetConfig(share_iou=0.6)
    head, shares = assign_head(box, BOXES_640, 50.0, strict)
    assert head == 1 and shares.tolist() == [False, True, False, False, False]
    labels = make_targets([box], 480, 640, PAPER, strict)
    wrong = scale_negative_mask([box], 480, 640, PAPER, strict)
    centre = labels[1] == POSITIVE
    for k in (0, 2):
        assert labels[k, cy, cx] == NEGATIVE
        assert np.array_equal(wrong[k], centre)
    assert not wrong[1].any()
    # share_iou = fit_iou shares every fitting head, as None does
    assert np.array_equal(make_targets([box], 480, 640, PAPER, TargetConfig(share_iou=0.5)), loose)


def test_scale_negatives_put_a_person_centre_in_the_loss_of_every_head_it_does_not_fit():
    box = Box(300, 50, 100, 236)  # head 1, fits head 0 too; centre (350, 168)
    wrong = scale_negative_mask([box], 480, 640, PAPER)
    labels = make_targets([box], 480, 640, PAPER)
    centre = labels[1] == POSITIVE
    assert centre.sum() > 0
    for k in range(5):
        if k in (0, 1):
            assert not wrong[k].any()  # the head it trains, and the one it fits (ignore)
        else:
            assert np.array_equal(wrong[k], centre) and (labels[k][centre] == NEGATIVE).all()
    # ignore boxes and boxes that fit no head add nothing
    assert not scale_negative_mask(
        [Box(0, 0, 20, 45), Box(0, 0, 40, 80, ignore=True)], 480, 640, PAPER
    ).any()


def test_scale_negatives_enter_the_training_loss_mask(tmp_path):
    data = _small_people(tmp_path, count=2)
    plain = TrainConfig(
        input_size=(240, 320),
        scale_aug=False,
        photometric=0.0,
        hflip=False,
        targets=TargetConfig(scale_negatives=False),
    )
    hard = replace(plain, targets=TargetConfig(scale_negatives=True))
    assert TrainConfig().targets.scale_negatives  # on by default
    base, extra = TrainingSet(data, PAPER, plain)[0], TrainingSet(data, PAPER, hard)[0]
    assert np.array_equal(base["labels"].numpy(), extra["labels"].numpy())
    wrong = scale_negative_mask(data[0].boxes, 240, 320, PAPER) & (
        base["labels"].numpy() == NEGATIVE
    )
    assert wrong.any()
    mask, more = base["mask"].numpy(), extra["mask"].numpy()
    assert (more >= mask).all()  # the same draw, plus every scale negative
    assert more[wrong].all() and not (more & ~mask & ~wrong).any()
