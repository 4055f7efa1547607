"""The floor a head rule leaves: head maps of a perfect detector, decoded and evaluated.

For every non-ignore person of an annotated set, a perfect detector puts one peak at
the person's centre in the head the training rule gives it
(:func:`alscout.trainer.targets.assign_head`). Decoding those maps
(:func:`~alscout.runtime.detections.decode_detections`, the default NMS and head-size
boxes) and evaluating them with the Caltech protocol shows what the head rule and the
decoder alone cost, before any learning: the miss rate of a detector that is never
wrong about where people are or which head they train. Both fit rules (boxes
standardised to aspect 0.41, the default, and as given) under both evaluation
protocols (``--aspect-ratio`` 0.41 and none), at every ``--zoom`` (as
``alscout evaluate --zoom``)::

    .venv/bin/python bench/oracle_heads.py --data ../shared/data/pets09_s2l1/gt.txt \\
        --images ../shared/data/pets09_s2l1/vtest.avi --frames 601-795 --zoom 1 2
"""

from __future__ import annotations

import argparse

import numpy as np

from alscout.runtime.detections import decode_detections
from alscout.trainer.cli_train import add_data_arguments, load_data
from alscout.trainer.data.annotations import ImageRecord
from alscout.trainer.data.augment import zoom_dataset
from alscout.trainer.data.filters import BoxFilter, filter_dataset
from alscout.trainer.evaluation.caltech import CALTECH_ASPECT_RATIO, EvalConfig, evaluate_records
from alscout.trainer.model import DetectorConfig
from alscout.trainer.targets import TargetConfig, assign_head

#: The peak a perfect detector emits at a person's centre (probability, squared width).
PEAK, SPREAD = 0.9, 18.0


def oracle_maps(record: ImageRecord, detector: DetectorConfig, targets: TargetConfig) -> np.ndarray:
    """``[K, H, W]`` maps with a peak at each trainable person's centre in its head."""
    height, width = record.height, record.width
    default_boxes = detector.boxes_at(height, width)
    min_height = targets.min_height * height / detector.reference_size[0]
    probs = np.zeros((len(default_boxes), height, width), np.float32)
    ys, xs = np.mgrid[:height, :width] + 0.5
    for box in record.boxes:
        head, _ = assign_head(box, default_boxes, min_height, targets)
        if head < 0:
            continue
        cx, cy = box.x + box.w / 2, box.y + box.h / 2
        peak = PEAK * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / SPREAD)
        probs[head] = np.maximum(probs[head], peak)
    return probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--zoom", type=float, nargs="+", default=[1.0], help="zoom factors")
    args = parser.parse_args()
    detector = DetectorConfig()
    base = load_data(args.data, args.format, args.images, args.frames)
    print("| zoom | people | head rule | evaluation | MR@FPPI=1 | LAMR |")
    print("| --- | --- | --- | --- | --- | --- |")
    for factor in args.zoom:
        zoomed = zoom_dataset(base, factor)
        height, width = zoomed[0].height, zoomed[0].width
        data = filter_dataset(zoomed, BoxFilter.at_input(height, width))
        for fit_aspect in (CALTECH_ASPECT_RATIO, None):
            targets = TargetConfig(fit_aspect=fit_aspect)
            dets = [
                decode_detections(oracle_maps(r, detector, targets), threshold=0.1) for r in data
            ]
            for aspect in (CALTECH_ASPECT_RATIO, None):
                result = evaluate_records(dets, data.images, EvalConfig(aspect_ratio=aspect))
                fit_text = "height (0.41)" if fit_aspect else "IoU as given"
                eval_text = "standardised 0.41" if aspect else "as given"
                print(
                    f"| {factor:g} | {result.num_gt} | {fit_text} | {eval_text} | "
                    f"{100 * result.mr_at_fppi1:.2f}% | {100 * result.lamr:.2f}% |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
