"""``alscout data``: make synthetic datasets, convert annotation formats, evaluate detections.

Examples::

    alscout data synth --out data/src --kind stills --count 500 --domain source --seed 0
    alscout data synth --out data/tgt --kind video --count 300 --domain target --seed 1
    alscout data convert --from mot --to coco --input SEQ/gt/gt.txt --images SEQ/video.avi \\
        --output SEQ/coco.json
    alscout data evaluate --gt SEQ/gt/gt.txt --images SEQ/video.avi --detections dets.json \\
        --out-json eval.json --plot eval.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alscout.errors import ConfigError
from alscout.trainer.evaluation.caltech import add_protocol_arguments

__all__ = ["configure", "run"]

_FORMATS = ("coco", "mot", "citypersons")


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return width, height


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``synth``, ``convert`` and ``evaluate`` subcommands."""
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = sub.add_parser("synth", help="write a synthetic pedestrian dataset (stills or video)")
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    synth.add_argument("--kind", choices=("stills", "video"), default="stills")
    synth.add_argument("--count", type=int, default=100, help="images, or frames of the video")
    synth.add_argument("--domain", default="source", help="domain preset: source | target")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=_size, default=(640, 480), help="WIDTHxHEIGHT (640x480)")
    synth.add_argument("--fps", type=float, default=15.0, help="video frame rate")
    synth.add_argument(
        "--container", choices=("avi", "mp4", "png"), default="avi", help="video file or PNG frames"
    )

    convert = sub.add_parser("convert", help="convert annotations between formats")
    convert.add_argument("--from", dest="src_format", choices=_FORMATS, required=True)
    convert.add_argument("--to", dest="dst_format", choices=_FORMATS, required=True)
    convert.add_argument("--input", type=Path, required=True, help="annotation file or folder")
    convert.add_argument(
        "--images", type=Path, help="image root (coco, citypersons) or video / frame folder (mot)"
    )
    convert.add_argument("--output", type=Path, required=True, help="file (coco, mot) or folder")
    convert.add_argument(
        "--filter", action="store_true", help="mark boxes the paper's filters reject as ignore"
    )
    convert.add_argument(
        "--train-size", type=_size, help="WIDTHxHEIGHT at which --filter measures boxes"
    )

    evaluate = sub.add_parser("evaluate", help="Caltech miss rate vs FPPI of detections")
    evaluate.add_argument("--gt", type=Path, required=True, help="ground-truth annotations")
    evaluate.add_argument("--gt-format", choices=_FORMATS, help="default: guessed from the file")
    evaluate.add_argument("--images", type=Path, help="as for convert")
    evaluate.add_argument(
        "--detections",
        type=Path,
        required=True,
        help='COCO results JSON: [{"image_id", "bbox": [x, y, w, h], "score"}]',
    )
    evaluate.add_argument("--min-height", type=float, help="Caltech height rule (e.g. 50)")
    add_protocol_arguments(evaluate)
    evaluate.add_argument("--out-json", type=Path, help="write the result as JSON")
    evaluate.add_argument("--plot", type=Path, help="write the MR-FPPI curve as PNG")


def _synth(args: argparse.Namespace) -> str:
    from alscout.trainer.synth import domain_preset, generate_stills, generate_video

    domain = domain_preset(args.domain)
    width, height = args.size
    if args.kind == "stills":
        data = generate_stills(args.out, args.count, domain, args.seed, width, height)
    else:
        data = generate_video(
            args.out, args.count, domain, args.seed, width, height, args.fps, args.container
        )
    what = "still images" if args.kind == "stills" else "video frames"
    return f"wrote {len(data)} {what}, {data.num_boxes} boxes to {args.out}"


def _convert(args: argparse.Namespace) -> str:
    from alscout.trainer.data.filters import BoxFilter, filter_dataset
    from alscout.trainer.data.formats import read_dataset, write_dataset

    if args.train_size and not args.filter:
        raise ConfigError("--train-size only applies with --filter")
    data = read_dataset(args.input, args.src_format, args.images)
    if args.filter:
        width, height = args.train_size or (None, None)
        data = filter_dataset(data, BoxFilter(train_width=width, train_height=height))
    out = write_dataset(data, args.output, args.dst_format)
    ignored = sum(b.ignore for r in data for b in r.boxes)
    return f"wrote {len(data)} images, {data.num_boxes} boxes ({ignored} ignore) to {out}"


def _evaluate(args: argparse.Namespace) -> str:
    from alscout.trainer.data.formats import read_dataset
    from alscout.trainer.evaluation.caltech import EvalConfig, evaluate_records
    from alscout.trainer.evaluation.results import read_coco_results

    data = read_dataset(args.gt, args.gt_format, args.images)
    detections = read_coco_results(args.detections, [r.image_id for r in data])
    protocol = EvalConfig(
        min_height=args.min_height, aspect_ratio=args.aspect_ratio, border=args.border
    )
    result = evaluate_records(detections, data.images, protocol)
    if args.out_json:
        result.to_json(args.out_json)
    if args.plot:
        from alscout.trainer.evaluation.plots import plot_mr_fppi

        plot_mr_fppi({args.detections.stem: result}, args.plot)
    return (
        f"images={result.num_images} people={result.num_gt} "
        f"LAMR={100 * result.lamr:.2f}% MR@FPPI=1: {100 * result.mr_at_fppi1:.2f}%"
    )


def run(args: argparse.Namespace) -> int:
    """Run one ``alscout data`` action; prints a one-line summary."""
    actions = {"synth": _synth, "convert": _convert, "evaluate": _evaluate}
    sys.stdout.write(actions[args.data_command](args) + "\n")
    return 0
