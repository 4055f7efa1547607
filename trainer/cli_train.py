"""``alscout train``: train or finetune the detector on an annotated dataset.

Examples::

    alscout train --data city/train.json --out runs/wl --epochs 50
    alscout train --data gt.txt --images vtest.avi --frames 1-600 --out runs/pets \\
        --input-size 480x360 --width 8 --epochs 8 --cache-images
    alscout train --data al/cycle3.json --init runs/wl/last.pt --out runs/cycle3
    alscout train --resume runs/pets/last.pt --data gt.txt --images vtest.avi --out runs/pets
    torchrun --nproc-per-node 4 -m alscout.apps.cli train --data ... --out ...   # 4 GPUs

Settings come from the defaults (the paper's), then ``--config FILE.toml``, then the
flags here. PyTorch is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from alscout.errors import ConfigError, InvalidInputError

if TYPE_CHECKING:
    from alscout.trainer.data.annotations import Dataset

__all__ = ["configure", "run", "add_data_arguments", "load_data", "parse_size", "parse_range"]

log = logging.getLogger(__name__)

_FORMATS = ("coco", "mot", "citypersons")


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` (WIDTHxHEIGHT, as ``alscout export`` and ``data`` write sizes) ->
    (height, width), the order of the configs and of array shapes."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT, e.g. 640x480, got {text!r}"
        ) from None
    return height, width


def parse_range(text: str) -> tuple[int, int]:
    """``"1-600"`` -> (1, 600), both inclusive and 1-based."""
    try:
        first, last = (int(v) for v in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FIRST-LAST, e.g. 1-600, got {text!r}") from None
    if not 1 <= first <= last:
        raise argparse.ArgumentTypeError(f"need 1 <= FIRST <= LAST, got {text!r}")
    return first, last


def add_data_arguments(parser: argparse.ArgumentParser, prefix: str = "", required: bool = True):
    """``--data``, ``--format``, ``--images``, ``--frames`` (with ``prefix``, e.g. ``val-``)."""
    what = "validation " if prefix else ""
    parser.add_argument(
        f"--{prefix}data",
        type=Path,
        required=required,
        help=f"{what}annotations: COCO json, MOT gt.txt or a CityPersons folder",
    )
    parser.add_argument(
        f"--{prefix}format", choices=_FORMATS, help="annotation format (default: guessed)"
    )
    parser.add_argument(
        f"--{prefix}images",
        type=Path,
        help="image root (COCO, CityPersons) or the video / frame folder (MOT)",
    )
    parser.add_argument(
        f"--{prefix}frames",
        type=parse_range,
        metavar="FIRST-LAST",
        help="keep images FIRST..LAST (1-based, inclusive, in file order; a MOT "
        "sequence's frame numbers)",
    )


def load_data(
    path: Path, fmt: str | None, images: Path | None, frames: tuple[int, int] | None
) -> Dataset:
    """Read a dataset and keep the chosen 1-based range of images."""
    from alscout.trainer.data.formats import read_dataset

    data = read_dataset(path, fmt, images)
    if frames is not None:
        first, last = frames
        if last > len(data):
            raise InvalidInputError(f"--frames {first}-{last}: {path} has {len(data)} images")
        data = data.subset(range(first - 1, last), name=f"{data.name}[{first}-{last}]")
    if not len(data):
        raise InvalidInputError(f"{path}: no images to use")
    return data


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``alscout train``."""
    add_data_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="run folder: last.pt, history")
    parser.add_argument("--config", type=Path, help="TOML with [detector] and [train] tables")
    parser.add_argument("--init", type=Path, help="start from these weights (w_l when finetuning)")
    parser.add_argument("--resume", type=Path, help="continue this run's checkpoint exactly")
    parser.add_argument("--epochs", type=int, help="epochs (default 50)")
    parser.add_argument("--stop-after", type=int, help="end this call after N epochs")
    parser.add_argument("--batch-size", type=int, help="global batch (default 8)")
    parser.add_argument("--input-size", type=parse_size, help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--lr", type=float, help="initial learning rate (default 1e-3)")
    parser.add_argument("--lr-final", type=float, help="learning rate at the end (default 1e-4)")
    parser.add_argument("--seed", type=int, help="seed of every random choice (default 0)")
    parser.add_argument("--width", type=int, help="detector base channels (default 16)")
    parser.add_argument("--dropout", type=float, help="dropout rate in training (default 0)")
    parser.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--workers", type=int, help="data loader processes (default 0)")
    parser.add_argument(
        "--cache-images", action="store_true", help="decode each image once, keep it in memory"
    )
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_data_arguments(parser, prefix="val-", required=False)


def run(args: argparse.Namespace) -> int:
    """Train; rank 0 prints one summary line."""
    import torch

    from alscout.trainer.config import TrainConfig, load_toml
    from alscout.trainer.distributed import init_distributed, shutdown
    from alscout.trainer.model import DetectorConfig
    from alscout.trainer.training import fit

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stop_after is not None and args.stop_after < 1:
        raise ConfigError(f"--stop-after must be >= 1, got {args.stop_after}")
    fixed = ("config", "epochs", "batch_size", "input_size", "lr", "lr_final", "seed")
    if args.resume and any(getattr(args, name) is not None for name in fixed):
        raise ConfigError(
            "--resume continues the run as it was configured; drop --config, --epochs, "
            "--batch-size, --input-size, --lr, --lr-final and --seed"
        )
    detector, train = load_toml(args.config) if args.config else (DetectorConfig(), TrainConfig())
    detector_changes = {"width": args.width, "dropout": args.dropout}
    detector_changes = {k: v for k, v in detector_changes.items() if v is not None}
    if detector_changes:
        if args.init or args.resume:
            raise ConfigError("--width/--dropout cannot change the network of --init or --resume")
        detector = DetectorConfig.from_dict({**detector.to_dict(), **detector_changes})
    train = train.with_overrides(
        epochs=args.epochs,
        batch_size=args.batch_size,
        input_size=args.input_size,
        lr=args.lr,
        lr_final=args.lr_final,
        seed=args.seed,
        device=args.device,
        num_workers=args.workers,
        cache_images=args.cache_images or None,
    )
    data = load_data(args.data, args.format, args.images, args.frames)
    val = None
    if args.val_data is not None:
        val = load_data(args.val_data, args.val_format, args.val_images, args.val_frames)
    context = init_distributed(train.device)
    try:
        result = fit(
            data,
            detector,
            train,
            out_dir=args.out,
            init=args.init,
            resume=args.resume,
            val=val,
            context=context,
            stop_after=args.stop_after,
            progress=not args.no_progress,
        )
    finally:
        shutdown(context)
    if context.is_main and result.history:
        last = result.history[-1]["train"]
        sys.stdout.write(
            f"trained epochs={last['epoch']} images={len(data)} loss={last['loss']:.4f} "
            f"p_pos={last['mean_prob_positive']:.3f} p_neg={last['mean_prob_negative']:.3f} "
            f"checkpoint={result.checkpoint}\n"
        )
    return 0
