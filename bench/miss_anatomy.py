"""What a trained detector misses at FPPI = 1, and what the default boxes allow, per zoom.

For each ``--zoom`` (as ``alscout evaluate --zoom``, with ``--mirror``), the detections
are cut at the score where false positives reach one per image (or the decoder's
threshold, when they never do: the miss rate is then bound by recall, not by false
positives). Every person still missed is a *near miss* when some kept detection
overlaps them at standardised IoU in [0.3, 0.5), else a *far miss*. Near misses are
grouped by the head whose default height the nearest detection has: how many, the
people's heights, the detection's height over the person's, and its centre's offset
(x in standardised widths, 0.41 x height; y in heights). False positives are counted
by head the same way.

The geometry column needs no detector: the share of counted people whose nearest
default box, centred on them, overlaps them at standardised IoU under 0.7 (and 0.65).
Such a person is matched only by a well-centred box of the right head; the paper's
boxes are 1.8x apart between heads 2 and 3 (145 and 80 px at 640x480), so a person
near the 0.75 x 108 = 81 px gap between them at 480x360 is one::

    .venv/bin/python bench/miss_anatomy.py --checkpoint RUN/last.pt \\
        --data ../shared/data/pets09_s2l1/gt.txt --images ../shared/data/pets09_s2l1/vtest.avi \\
        --frames 601-795 --zoom 1 2 --threads 1
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import torch

from alscout.runtime.detections import BOX_SIZES, iou_matrix
from alscout.trainer.checkpoint import load_checkpoint
from alscout.trainer.cli_train import add_data_arguments, load_data
from alscout.trainer.data.annotations import ImageRecord
from alscout.trainer.data.augment import zoom_dataset
from alscout.trainer.data.filters import BoxFilter, filter_dataset
from alscout.trainer.evaluation.caltech import (
    CALTECH_ASPECT_RATIO,
    EvalConfig,
    at_border,
    match_image,
    record_truth,
    standardize_aspect,
)
from alscout.trainer.training import evaluate

#: Standardised IoU from which an unmatched person counts as a near miss.
NEAR = 0.3


def truth(record: ImageRecord, config: EvalConfig) -> tuple[np.ndarray, np.ndarray]:
    """``boxes [G, 4]`` and ``ignore [G]`` of one record as the protocol counts them
    (:func:`record_truth`, then ``config``'s frame-edge rule)."""
    boxes, ignore = record_truth(record)
    if config.border is not None:
        ignore |= at_border(boxes, record.width, record.height, config.border)
    return boxes, ignore


def threshold_at_fppi1(
    detections: list[tuple[np.ndarray, np.ndarray]], truths: list[tuple[np.ndarray, np.ndarray]]
) -> float:
    """The lowest score kept while false positives stay within one per image."""
    typed = []
    for (boxes, scores), (gt, ignore) in zip(detections, truths, strict=True):
        kinds, _ = match_image(boxes, scores, gt, ignore)
        typed += [(float(s), int(k)) for s, k in zip(scores, kinds, strict=True) if k >= 0]
    typed.sort(key=lambda item: -item[0])
    false, lowest = 0, 0.0
    for score, kind in typed:
        false += kind == 0
        if false > len(detections):
            break
        lowest = score
    return lowest


def nearest_head(heights: np.ndarray, default_heights: np.ndarray) -> np.ndarray:
    """Index of the default height nearest (in log) to each of ``heights [M]``."""
    ratio = np.log(np.asarray(heights, np.float64)[:, None] / default_heights[None, :])
    return np.abs(ratio).argmin(axis=1)


def anatomy(
    detections: list[tuple[np.ndarray, np.ndarray]],
    truths: list[tuple[np.ndarray, np.ndarray]],
    default_heights: np.ndarray,
    threshold: float,
) -> tuple[np.ndarray, Counter]:
    """Missed people ``[M, 6]`` (height, best IoU, detection's head, det / person height,
    dx, dy) and false positives per head, with detections below ``threshold`` dropped."""
    misses, false = [], Counter()
    for (boxes, scores), (gt, ignore) in zip(detections, truths, strict=True):
        kept = scores >= threshold
        boxes, scores = boxes[kept], scores[kept]
        kinds, matched = match_image(boxes, scores, gt, ignore)
        if len(boxes):
            false.update(nearest_head(boxes[kinds == 0, 3], default_heights).tolist())
        std_gt = standardize_aspect(gt, CALTECH_ASPECT_RATIO)
        std_det = standardize_aspect(boxes, CALTECH_ASPECT_RATIO) if len(boxes) else boxes
        for j in np.flatnonzero(~matched & ~ignore):
            height = gt[j, 3]
            if not len(boxes):
                misses.append((height, 0.0, -1, 0.0, 0.0, 0.0))
                continue
            overlaps = iou_matrix(std_det, std_gt[j : j + 1])[:, 0]
            d = int(overlaps.argmax())
            dx = (boxes[d, 0] + boxes[d, 2] / 2 - gt[j, 0] - gt[j, 2] / 2) / (0.41 * height)
            dy = (boxes[d, 1] + boxes[d, 3] / 2 - gt[j, 1] - gt[j, 3] / 2) / height
            head = int(nearest_head(boxes[d : d + 1, 3], default_heights)[0])
            misses.append((height, overlaps[d], head, boxes[d, 3] / height, dx, dy))
    return np.array(misses, np.float64).reshape(-1, 6), false


def loose_share(truths: list[tuple[np.ndarray, np.ndarray]], default_heights: np.ndarray) -> str:
    """Share of counted people whose nearest default box, centred, has std. IoU < 0.7 / 0.65."""
    heights = np.concatenate([gt[~ignore, 3] for gt, ignore in truths])
    tall = heights[:, None]
    ratio = np.minimum(tall, default_heights) / np.maximum(tall, default_heights)
    best = (ratio**2).max(axis=1)
    return f"{100 * np.mean(best < 0.7):.1f}% (< 0.65: {100 * np.mean(best < 0.65):.1f}%)"


def _percentiles(values: np.ndarray, digits: int) -> str:
    return "/".join(f"{v:.{digits}f}" for v in np.percentile(values, [10, 50, 90]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint or weights")
    add_data_arguments(parser)
    parser.add_argument("--zoom", type=float, nargs="+", default=[1.0], help="zoom factors")
    parser.add_argument("--box-size", choices=BOX_SIZES, default="head", help="decoder box size")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for PyTorch")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    state = load_checkpoint(args.checkpoint)
    model = state.build_model()
    input_size = state.train.input_size if state.train is not None else (480, 640)
    base = load_data(args.data, args.format, args.images, args.frames)
    config = EvalConfig()
    for factor in args.zoom:
        result, detections = evaluate(
            model, base, input_size, mirror=True, zoom=factor, box_size=args.box_size
        )
        zoomed = zoom_dataset(base, factor)
        data = filter_dataset(zoomed, BoxFilter.at_input(*input_size))
        truths = [truth(r, config) for r in data]
        default_heights = model.config.boxes_at(data[0].height, data[0].width)[:, 0]
        threshold = threshold_at_fppi1(detections, truths)
        misses, false = anatomy(detections, truths, default_heights, threshold)
        near = misses[misses[:, 1] >= NEAR]
        far = misses[misses[:, 1] < NEAR]
        print(
            f"zoom {factor:g}: people {result.num_gt}, "
            f"MR@FPPI=1 {100 * result.mr_at_fppi1:.2f}%, cut at score {threshold:.3f}; "
            f"missed {len(misses)}: near {len(near)}, far {len(far)}; "
            f"false positives by head {dict(sorted(false.items()))}; people whose nearest "
            f"default box has std. IoU < 0.7: {loose_share(truths, default_heights)}"
        )
        for head in range(len(default_heights)):
            rows = near[near[:, 2] == head]
            if len(rows):
                print(
                    f"  near misses under a head-{head} box: {len(rows)}; person height "
                    f"p10/50/90 {_percentiles(rows[:, 0], 0)} px, box / person "
                    f"{_percentiles(rows[:, 3], 2)}, |dx| {_percentiles(np.abs(rows[:, 4]), 2)} "
                    f"widths, |dy| {_percentiles(np.abs(rows[:, 5]), 2)} heights"
                )
        if len(far):
            print(f"  far misses: person height p10/50/90 {_percentiles(far[:, 0], 0)} px")


if __name__ == "__main__":
    main()
