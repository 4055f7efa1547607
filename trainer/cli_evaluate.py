"""``alscout evaluate``: a trained detector's Caltech miss rate on an annotated dataset.

Example (PETS 2009 S2.L1, the frames held out from training)::

    alscout evaluate --checkpoint runs/pets/last.pt --data gt.txt --images vtest.avi \\
        --frames 601-795 --out-json runs/pets/eval.json --plot runs/pets/mr_fppi.png

Images are resized to the checkpoint's training input size unless ``--input-size``
says otherwise; boxes are compared in the stored images' pixels. Unless ``--no-filter``,
the paper's filters make ground truth under 50 px tall (at 640x480 scale, measured at
the input size) or with width/height outside [0.2, 0.65] ignore. Nothing that depends on
the detector is ignored: a person who fits no head (e.g. taller than the largest default
box) counts, as the Caltech protocol does not depend on the detector (docs/detector.md). Boxes are
matched after the toolbox's standardisation to width = 0.41 x height (``--aspect-ratio``);
people within 5 px (at 640x480) of the frame's edge are ignore, as the toolbox's
``xRng``/``yRng`` (``--border``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from alscout.runtime.detections import BOX_SIZES, NMS_CONTAINED, NMS_IOU
from alscout.trainer.cli_train import add_data_arguments, load_data, parse_size
from alscout.trainer.evaluation.caltech import add_protocol_arguments

__all__ = ["configure", "run"]

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``alscout evaluate``."""
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint or weights")
    add_data_arguments(parser)
    parser.add_argument(
        "--input-size", type=parse_size, help="WIDTHxHEIGHT (default: the training input size)"
    )
    parser.add_argument(
        "--threshold", type=float, default=0.05, help="lowest peak kept (default 0.05)"
    )
    parser.add_argument(
        "--nms-iou", type=float, default=NMS_IOU,
        help=f"NMS drops a box whose IoU with a higher-scored one is above this ({NMS_IOU})",
    )  # fmt: skip
    parser.add_argument(
        "--nms-contained", type=float, default=NMS_CONTAINED, metavar="F",
        help="NMS also drops a box with more than F of its area inside a higher-scored one, "
        "or holding more than F of one's area around its centre "
        f"(default {NMS_CONTAINED}; 1: IoU alone, the decoder before 2026-12-02)",
    )  # fmt: skip
    parser.add_argument(
        "--box-size", choices=BOX_SIZES, default="head",
        help="head: each head's default box (SPEC, default); interpolated: between the "
        "neighbouring heads' boxes, weighted by their probabilities (docs/detector.md)",
    )  # fmt: skip
    parser.add_argument(
        "--peaks", choices=("subpixel", "pixel"), default="subpixel",
        help="subpixel: centre each box on its peak refined between the head's coarse "
        "samples (default); pixel: on the peak pixel (the decoder before 2026-12-04)",
    )  # fmt: skip
    add_protocol_arguments(parser)
    parser.add_argument("--mirror", action="store_true", help="average with the mirrored image")
    parser.add_argument(
        "--zoom",
        type=float,
        default=1.0,
        metavar="F",
        help="zoom every frame about its centre first (F > 1 enlarges people, F < 1 "
        "shrinks them onto a canvas; ground truth follows), to test scale robustness",
    )
    parser.add_argument(
        "--no-filter",
        action="store_true",
        help="count every box; by default the paper's filters make people under 50 px "
        "tall (at 640x480 scale) or with width/height outside [0.2, 0.65] ignore",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument(
        "--device", default="cpu",
        help="where the network runs: cpu (default), cuda, cuda:N or auto (decoding and "
        "matching stay on the CPU)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--out-json", type=Path, help="write the result (curve, LAMR) as JSON")
    parser.add_argument("--plot", type=Path, help="write the MR-FPPI curve as PNG")
    parser.add_argument("--detections", type=Path, help="write detections as COCO results")


def _aspect_text(aspect: float | None) -> str:
    return "as given" if aspect is None else f"standardised to aspect {aspect:g}"


def run(args: argparse.Namespace) -> int:
    """Evaluate; prints one summary line."""
    import torch

    from alscout.trainer.checkpoint import load_checkpoint
    from alscout.trainer.distributed import resolve_device
    from alscout.trainer.training import evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    state = load_checkpoint(args.checkpoint)
    fitted = state.train.targets.fit_aspect if state.train is not None else args.aspect_ratio
    if fitted != args.aspect_ratio:
        log.warning(
            "%s was trained to fit boxes %s but is evaluated with boxes %s: its figures "
            "are not the ones it was trained for (--aspect-ratio %s matches its training)",
            args.checkpoint, _aspect_text(fitted), _aspect_text(args.aspect_ratio),
            "none" if fitted is None else fitted,
        )  # fmt: skip
    model = state.build_model().to(resolve_device(args.device))
    input_size = args.input_size
    if input_size is None:
        input_size = state.train.input_size if state.train is not None else (480, 640)
    data = load_data(args.data, args.format, args.images, args.frames)
    result, detections = evaluate(
        model,
        data,
        input_size,
        threshold=args.threshold,
        nms_iou=args.nms_iou,
        mirror=args.mirror,
        paper_filters=not args.no_filter,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        zoom=args.zoom,
        nms_contained=args.nms_contained,
        box_size=args.box_size,
        subpixel=args.peaks == "subpixel",
        aspect_ratio=args.aspect_ratio,
        border=args.border,
    )
    if args.out_json:
        result.to_json(args.out_json)
    if args.plot:
        from alscout.trainer.evaluation.plots import plot_mr_fppi

        plot_mr_fppi({args.checkpoint.parent.name or "detector": result}, args.plot)
    if args.detections:
        from alscout.trainer.evaluation.results import write_coco_results

        write_coco_results([r.image_id for r in data], detections, args.detections)
    sys.stdout.write(
        f"images={result.num_images} people={result.num_gt} ignored={result.num_ignore_gt} "
        f"LAMR={100 * result.lamr:.2f}% MR@FPPI=1: {100 * result.mr_at_fppi1:.2f}%\n"
    )
    return 0
