"""The Caltech protocol on cases computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from alscout.errors import ConfigError, InvalidInputError
from alscout.trainer.data.annotations import Box, ImageRecord
from alscout.trainer.evaluation.caltech import (
    CALTECH_ASPECT_RATIO,
    CALTECH_BORDER,
    EvalConfig,
    at_border,
    evaluate,
    evaluate_records,
    match_image,
    parse_aspect_ratio,
    parse_border,
    standardize_aspect,
)
from alscout.trainer.evaluation.detections import DEFAULT_BOXES, decode_detections, iou_matrix
from alscout.trainer.evaluation.plots import plot_mr_fppi
from alscout.trainer.synth import domain_preset, render_still

PERSON = [10.0, 10.0, 20.0, 50.0]


def _gt(*boxes: list[float], ignore: tuple[bool, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    flags = ignore or (False,) * len(boxes)
    return np.array(boxes, np.float64).reshape(-1, 4), np.array(flags, bool)


def _det(*pairs: tuple[list[float], float]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.array([b for b, _ in pairs], np.float64).reshape(-1, 4),
        np.array([s for _, s in pairs], np.float64),
    )


def test_perfect_detections() -> None:
    truth = [_gt(PERSON, [50, 10, 20, 50]), _gt([5, 5, 30, 60])]
    dets = [_det((PERSON, 0.9), ([50, 10, 20, 50], 0.8)), _det(([5, 5, 30, 60], 0.7))]
    result = evaluate(dets, truth)
    assert result.mr_at_fppi1 == 0.0
    assert result.reference_mr == [0.0] * 9
    assert result.lamr == pytest.approx(1e-10)  # the toolbox's floor under log(0)
    assert result.fppi == [0.0, 0.0, 0.0, 0.0] and result.miss_rate[-1] == 0.0


def test_all_missed() -> None:
    truth = [_gt(PERSON), _gt([50, 10, 20, 50])]
    result = evaluate([_det(), _det(([100, 100, 20, 50], 0.9))], truth)
    assert result.lamr == 1.0 and result.mr_at_fppi1 == 1.0
    assert result.fppi == [0.0, 0.5] and result.miss_rate == [1.0, 1.0]
    nothing = evaluate([_det(), _det()], truth)
    assert nothing.fppi == [0.0] and nothing.lamr == 1.0 and nothing.num_gt == 2


def test_known_false_positive_counts() -> None:
    # 8 images, 4 people in images 0-3. By score: TP 0.9, FP 0.8, TP 0.7, 4 FP at 0.6, TP 0.3
    far = [200.0, 200.0, 20.0, 50.0]
    truth = [_gt(PERSON) for _ in range(4)] + [_gt() for _ in range(4)]
    dets = [
        _det((PERSON, 0.9)),
        _det((PERSON, 0.7), (far, 0.6)),
        _det((PERSON, 0.3), (far, 0.6)),
        _det(),
        _det((far, 0.8)),
        _det((far, 0.6)),
        _det((far, 0.6)),
        _det(),
    ]
    result = evaluate(dets, truth)
    # one point per threshold (the four FPs at 0.6 are one point), after FPPI 0 / MR 1
    assert result.thresholds == [None, 0.9, 0.8, 0.7, 0.6, 0.3]
    assert result.fppi == pytest.approx([0, 0, 0.125, 0.125, 0.625, 0.625])
    assert result.miss_rate == pytest.approx([1, 0.75, 0.75, 0.5, 0.5, 0.25])
    # refs 0.01 .. 0.056 see FPPI 0 (MR .75); 0.1 also (0.125 > 0.1); 0.18 .. 0.56 see
    # FPPI 0.125 (MR .5); 1.0 sees FPPI 0.625 (MR .25)
    assert result.reference_mr == pytest.approx([0.75] * 5 + [0.5] * 3 + [0.25])
    expected = math.exp((5 * math.log(0.75) + 3 * math.log(0.5) + math.log(0.25)) / 9)
    assert result.lamr == pytest.approx(expected)
    assert result.mr_at_fppi1 == pytest.approx(0.25)
    assert result.num_detections == 8 and result.num_gt == 4


def test_curve_that_never_gets_low_enough_takes_miss_rate_one() -> None:
    # 2 images: the best detection is a false positive, so FPPI starts at 0.5
    truth = [_gt(PERSON), _gt()]
    dets = [_det((PERSON, 0.5)), _det(([100, 100, 20, 50], 0.9))]
    result = evaluate(dets, truth)
    assert result.fppi == [0.0, 0.5, 0.5] and result.miss_rate == [1.0, 1.0, 0.0]
    # refs below 0.5 sample the infinite threshold (MR 1); 0.56 and 1 sample MR 0
    assert result.reference_mr == [1.0] * 7 + [0.0, 0.0]
    assert result.lamr == pytest.approx(math.exp(2 * math.log(1e-10) / 9))


def test_ignore_regions() -> None:
    crowd = [0.0, 0.0, 100.0, 100.0]
    gt_boxes, gt_ignore = _gt(PERSON, crowd, ignore=(False, True))
    inside = [60.0, 60.0, 20.0, 30.0]  # IoU with the region 0.06, all of it inside
    half = [90.0, 60.0, 20.0, 30.0]  # half inside: ignored (>= 0.5)
    little = [92.0, 60.0, 20.0, 30.0]  # 40 % inside: a false positive
    boxes, scores = _det((inside, 0.9), (half, 0.8), (little, 0.7), (PERSON, 0.6))
    det_type, matched = match_image(boxes, scores, gt_boxes, gt_ignore, aspect_ratio=None)
    assert det_type.tolist() == [-1, -1, 0, 1]
    assert matched.tolist() == [True, False]  # the region is not a miss
    result = evaluate([(boxes, scores)], [(gt_boxes, gt_ignore)])
    assert result.num_gt == 1 and result.num_ignore_gt == 1 and result.num_ignored_detections == 2
    assert result.fppi == [0.0, 1.0, 1.0] and result.miss_rate == [1.0, 1.0, 0.0]
    # a person inside a crowd region is matched to the person, not the region
    det_type, _ = match_image(*_det((PERSON, 0.9)), gt_boxes, gt_ignore, aspect_ratio=None)
    assert det_type.tolist() == [1]


def test_duplicates_and_greedy_order() -> None:
    # boxes as given: the IoUs below are computed by hand on these widths
    gt_boxes, gt_ignore = _gt(PERSON)
    shifted = [20.0, 10.0, 20.0, 50.0]  # IoU 1/3 with PERSON
    exact_half = [10.0, 10.0, 20.0, 25.0]  # IoU exactly 0.5: a match
    det_type, matched = match_image(
        *_det((PERSON, 0.9), (PERSON, 0.8)), gt_boxes, gt_ignore, aspect_ratio=None
    )
    assert det_type.tolist() == [1, 0] and matched.tolist() == [True]
    det_type, _ = match_image(*_det((shifted, 0.9)), gt_boxes, gt_ignore, aspect_ratio=None)
    assert det_type.tolist() == [0]
    det_type, _ = match_image(*_det((exact_half, 0.9)), gt_boxes, gt_ignore, aspect_ratio=None)
    assert det_type.tolist() == [1]
    # the higher score takes the person even when the lower one overlaps it better
    near = [11.0, 10.0, 20.0, 50.0]
    det_type, _ = match_image(
        *_det((PERSON, 0.3), (near, 0.6)), gt_boxes, gt_ignore, aspect_ratio=None
    )
    assert det_type.tolist() == [0, 1]
    # two people, one detection between them: it takes the better overlap
    two_boxes, two_ignore = _gt([0, 0, 20, 50], [8, 0, 20, 50])
    _, matched = match_image(*_det(([7, 0, 20, 50], 0.9)), two_boxes, two_ignore, aspect_ratio=None)
    assert matched.tolist() == [False, True]


def test_min_height_rule_and_records() -> None:
    small = [100.0, 100.0, 10.0, 30.0]
    records = [ImageRecord(0, Path("a.png"), 640, 480, (Box(*PERSON), Box(*small)))]
    dets = [_det((PERSON, 0.9), ([200, 200, 10, 30], 0.8), ([300, 200, 16, 41], 0.7))]
    plain = evaluate_records(dets, records)
    assert plain.num_gt == 2 and plain.mr_at_fppi1 == 0.5
    # under 50 px: the small person is ignored; the 30 px detection (< 40) is dropped,
    # the 41 px one stays and is a false positive
    tall = evaluate_records(dets, records, EvalConfig(min_height=50))
    assert tall.num_gt == 1 and tall.num_detections == 2 and tall.fppi[-1] == 1.0
    assert tall.mr_at_fppi1 == 0.0


def test_standardize_aspect_keeps_height_and_centre() -> None:
    boxes = np.array([[10.0, 20.0, 20.0, 100.0], [0.0, 0.0, 60.0, 50.0]])
    out = standardize_aspect(boxes, 0.41)
    assert out[:, 2] == pytest.approx([41.0, 20.5])
    assert out[:, 3].tolist() == [100.0, 50.0] and out[:, 1].tolist() == [20.0, 0.0]
    assert out[:, 0] + out[:, 2] / 2 == pytest.approx(boxes[:, 0] + boxes[:, 2] / 2)
    assert boxes[0, 2] == 20.0  # the input is not changed
    assert standardize_aspect(np.zeros((0, 4)), 0.41).shape == (0, 4)


def test_aspect_standardisation_matches_on_height_and_centre() -> None:
    # a narrow person (w/h 0.28) and a wide detection (0.6) of the same height and
    # centre: IoU 0.28 / 0.6 as given, 1 after Caltech's standardisation to 0.41
    narrow = [100.0, 100.0, 28.0, 100.0]
    wide = [84.0, 100.0, 60.0, 100.0]
    truth, dets = [_gt(narrow)], [_det((wide, 0.9))]
    raw = evaluate(dets, truth, EvalConfig(aspect_ratio=None))
    assert raw.mr_at_fppi1 == 1.0 and raw.fppi[-1] == 1.0
    assert match_image(*dets[0], *truth[0])[0].tolist() == [1]  # the default: standardised
    assert match_image(*dets[0], *truth[0], aspect_ratio=None)[0].tolist() == [0]
    standard = evaluate(dets, truth)
    assert standard.config["aspect_ratio"] == CALTECH_ASPECT_RATIO
    assert standard.mr_at_fppi1 == 0.0 and standard.fppi[-1] == 0.0
    # a detection of the right width but 2/3 of the height fails after it (IoU 4/9)...
    short = [100.0, 100.0 + 50 / 3, 28.0, 200 / 3]
    assert evaluate([_det((short, 0.9))], truth).mr_at_fppi1 == 1.0
    # ... and ignore regions keep their shape: a wide crowd box is not narrowed
    crowd = [0.0, 0.0, 400.0, 100.0]
    gt_boxes, gt_ignore = _gt(crowd, ignore=(True,))
    edge = [350.0, 0.0, 60.0, 100.0]  # standardised: 41 wide at x 359.5, all inside
    result = evaluate([_det((edge, 0.9))], [(gt_boxes, gt_ignore)])
    assert result.num_ignored_detections == 1 and result.fppi == [0.0]


def test_parse_aspect_ratio() -> None:
    assert parse_aspect_ratio("0.41") == 0.41 and parse_aspect_ratio("None") is None
    for bad in ("wide", "0", "-1"):
        with pytest.raises(ConfigError):
            parse_aspect_ratio(bad)
    with pytest.raises(ConfigError, match="aspect_ratio"):
        EvalConfig(aspect_ratio=0.0)


def test_at_border_is_the_toolbox_x_and_y_range_scaled_with_the_frame() -> None:
    # Caltech's xRng [5 635], yRng [5 475] at 640x480: x < 5 or x + w > 635 is out
    boxes = np.array(
        [[5, 5, 630, 470], [4.9, 100, 20, 50], [600, 100, 35.1, 50], [300, 425.1, 20, 50]]
    )
    assert at_border(boxes, 640, 480, 5.0).tolist() == [False, True, True, True]
    # at 1280x960 the border is 10 px on each axis; 0 px only cuts boxes past the frame
    assert at_border(np.array([[9, 500, 20, 50], [11, 500, 20, 50]]), 1280, 960, 5.0).tolist() == [
        True,
        False,
    ]
    assert not at_border(boxes, 640, 480, 0.0).any()


def test_a_person_cut_by_the_frame_is_ignored_unless_border_is_none() -> None:
    cut = Box(630.0, 200.0, 20.0, 50.0)  # runs past the 640 px frame's right edge
    records = [ImageRecord(0, Path("a.png"), 640, 480, (Box(*PERSON), cut))]
    found = [_det((PERSON, 0.9), ([630, 200, 10, 50], 0.8))]  # one on the visible part
    caltech = evaluate_records(found, records)
    assert caltech.config["border"] == CALTECH_BORDER
    assert caltech.num_gt == 1 and caltech.num_ignore_gt == 1
    assert caltech.num_ignored_detections == 1 and caltech.mr_at_fppi1 == 0.0
    counted = evaluate_records(found, records, EvalConfig(border=None))
    assert counted.num_gt == 2 and counted.num_ignored_detections == 0
    missed = evaluate_records([_det((PERSON, 0.9))], records, EvalConfig(border=None))
    assert missed.mr_at_fppi1 == 0.5
    assert evaluate_records([_det((PERSON, 0.9))], records).mr_at_fppi1 == 0.0
    # raw arrays carry no frame size: the rule applies only with image_sizes
    truth = [_gt(PERSON, [630.0, 200.0, 20.0, 50.0])]
    assert evaluate([_det((PERSON, 0.9))], truth).num_gt == 2
    assert evaluate([_det((PERSON, 0.9))], truth, image_sizes=[(640, 480)]).num_gt == 1
    with pytest.raises(InvalidInputError, match="image sizes"):
        evaluate([_det((PERSON, 0.9))], truth, image_sizes=[(640, 480), (640, 480)])


def test_parse_border() -> None:
    assert parse_border("5") == 5.0 and parse_border("0") == 0.0 and parse_border("none") is None
    for bad in ("edge", "-1", "240"):
        with pytest.raises(ConfigError):
            parse_border(bad)
    with pytest.raises(ConfigError, match="border"):
        EvalConfig(border=-1.0)


def test_json_and_plot(tmp_path: Path) -> None:
    truth = [_gt(PERSON), _gt()]
    result = evaluate([_det((PERSON, 0.9)), _det(([90, 90, 20, 50], 0.4))], truth)
    text = result.to_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data == json.loads(text)
    assert data["mr_at_fppi1"] == 0.0 and data["thresholds"][0] is None
    assert data["config"]["iou"] == 0.5
    other = evaluate([_det(), _det()], truth)
    out = plot_mr_fppi({"ours": result, "nothing": other}, tmp_path / "plot.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    with pytest.raises(InvalidInputError):
        plot_mr_fppi({}, tmp_path / "none.png")


def test_bad_input() -> None:
    with pytest.raises(InvalidInputError):
        evaluate([_det()], [])
    with pytest.raises(InvalidInputError, match="det_boxes"):
        match_image(np.zeros((2, 3)), np.zeros(2), np.zeros((0, 4)), np.zeros(0, bool))
    with pytest.raises(ConfigError):
        EvalConfig(iou=0)


def _oracle_maps(record: ImageRecord) -> np.ndarray:
    """Head maps a perfect detector would emit: a peak at each person's centre."""
    height, width = record.height, record.width
    probs = np.zeros((5, height, width), np.float32)
    ys, xs = np.mgrid[:height, :width] + 0.5
    for b in record.boxes:
        if b.ignore:
            continue
        cx, cy = b.x + b.w / 2, b.y + b.h / 2
        sizes = [(w * width / 640, h * height / 480) for h, w in DEFAULT_BOXES]
        candidates = np.array([[cx - w / 2, cy - h / 2, w, h] for w, h in sizes])
        k = int(np.argmax(iou_matrix(np.array([[b.x, b.y, b.w, b.h]]), candidates)[0]))
        blob = 0.9 * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / 18.0)
        probs[k] = np.maximum(probs[k], blob)
    return probs


def test_decode_and_evaluate_oracle_maps_on_synthetic_scenes() -> None:
    # synthetic people are jittered default boxes, so perfect head maps decode to
    # boxes that all match: miss rate 0 and no false positive
    rng = np.random.default_rng(0)
    records = []
    for i in range(4):
        _, boxes = render_still(rng, domain_preset("target"), 320, 240)
        records.append(ImageRecord(i, Path(f"{i}.png"), 320, 240, boxes))
    assert sum(not b.ignore for r in records for b in r.boxes) >= 8
    dets = [decode_detections(_oracle_maps(r), threshold=0.3) for r in records]
    result = evaluate_records(dets, records)
    assert result.mr_at_fppi1 == 0.0 and result.fppi[-1] == 0.0
