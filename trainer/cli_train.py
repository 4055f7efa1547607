"""``alscout train``: train or finetune the detector on an annotated dataset.

Examples::

    alscout train --data city/train.json --out runs/wl --epochs 50
    alscout train --data gt.txt --images vtest.avi --frames 1-600 --out runs/pets \\
        --input-size 480x360 --width 8 --epochs 8 --cache-images
    alscout train --data al/cycle3.json --init runs/wl/last.pt --out runs/cycle3
    alscout train --resume runs/pets/last.pt --data gt.txt --images vtest.avi --out runs/pets
    alscout train --data gt.txt --images vtest.avi --frames 1-600 \
        --data synth/annotations.json --weight 0.5 --out runs/mix   # two sources
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
    from alscout.trainer.cli_sources import add_source_arguments

    add_source_arguments(parser)
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
    parser.add_argument(
        "--difficulty-head", action="store_true", default=None,
        help="also train the learned-difficulty head (DEAL; acquisition 'difficulty')",
    )  # fmt: skip
    parser.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument(
        "--hard-negatives", type=float, metavar="FRACTION",
        help="share of the N2P negatives taken as the hardest pixels at each step "
        "(online hard negative mining; default 0.5; 0: all drawn uniformly, as the paper)",
    )  # fmt: skip
    parser.add_argument(
        "--average-weights", type=float, metavar="FRACTION",
        help="deliver the average of the weights after each of the last FRACTION of the "
        "epochs (stochastic weight averaging; default 0.5; 0: the last weights)",
    )  # fmt: skip
    _add_augmentation_arguments(parser)
    parser.add_argument("--workers", type=int, help="data loader processes (default 0)")
    parser.add_argument(
        "--cache-images", action="store_true", help="decode each image once, keep it in memory"
    )
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_data_arguments(parser, prefix="val-", required=False)


def _add_augmentation_arguments(parser: argparse.ArgumentParser) -> None:
    """Zoom and photometric jitter (docs/detector.md, "Augmentation")."""
    parser.add_argument(
        "--no-scale-aug",
        action="store_true",
        help="no zoom augmentation (mirroring only, plus --photometric)",
    )
    parser.add_argument(
        "--zoom-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="zoom factors: the clip of --zoom-mode heads, the draw of uniform "
        "(default 0.25 4.0; > 1 enlarges people)",
    )
    parser.add_argument(
        "--zoom-mode",
        choices=("heads", "uniform"),  # TrainConfig.ZOOM_MODES (no torch import here)
        help="heads (default): a random person takes a random head's box height; "
        "uniform: a log-uniform factor from --zoom-range",
    )
    parser.add_argument("--zoom-prob", type=float, help="share of images zoomed (default 0.5)")
    parser.add_argument(
        "--detail-loss", type=float, metavar="MAX",
        help="shrink each image by a factor in [1, MAX] and enlarge it back, so sharpness "
        "stops telling size (default 1: off)",
    )  # fmt: skip
    parser.add_argument(
        "--photometric",
        type=float,
        help="brightness and contrast jitter, +- this fraction (default 0.2; 0 = off)",
    )


def _augmentation_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The TrainConfig fields the augmentation flags set (None: not given)."""
    return {
        "scale_aug": False if args.no_scale_aug else None,
        "zoom_range": tuple(args.zoom_range) if args.zoom_range else None,
        "zoom_prob": args.zoom_prob,
        "zoom_mode": args.zoom_mode,
        "photometric": args.photometric,
        "detail_loss": args.detail_loss,
    }


def _load_sources(args: argparse.Namespace) -> tuple[Dataset, list[float]]:
    """Every ``--data`` source, concatenated, and one sampling weight per image."""
    from alscout.trainer.cli_sources import concat_sources, described, source_specs

    specs = source_specs(args)
    parts = [load_data(s.data, s.format, s.images, s.frames) for s in specs]
    for spec, part in zip(specs, parts, strict=True):
        log.info("training source %s", described(spec, len(part)))
    return concat_sources(parts, [s.weight for s in specs])


#: flag -> (config in the checkpoint, its field): the settings a resumed run keeps
_RESUMED = {
    "--epochs": ("train", "epochs"),
    "--batch-size": ("train", "batch_size"),
    "--input-size": ("train", "input_size"),
    "--lr": ("train", "lr"),
    "--lr-final": ("train", "lr_final"),
    "--seed": ("train", "seed"),
    "--hard-negatives": ("train", "hard_negatives"),
    "--average-weights": ("train", "average_weights"),
    "--width": ("detector", "width"),
    "--dropout": ("detector", "dropout"),
    "--difficulty-head": ("detector", "difficulty_head"),
    "--no-scale-aug": ("train", "scale_aug"),
    "--zoom-range": ("train", "zoom_range"),
    "--zoom-prob": ("train", "zoom_prob"),
    "--zoom-mode": ("train", "zoom_mode"),
    "--photometric": ("train", "photometric"),
    "--detail-loss": ("train", "detail_loss"),
}


def _setting_text(flag: str, value: object) -> str:
    """``value`` as the flag takes it (``--input-size`` is WIDTHxHEIGHT)."""
    if isinstance(value, list | tuple):
        if flag == "--input-size":
            height, width = value
            return f"{width}x{height}"
        return " ".join(str(v) for v in value)
    return str(value)


def _check_resume(args: argparse.Namespace, augmentation: dict[str, object]) -> None:
    """Refuse flags that would change the resumed run, each named with the run's value;
    the run's own values are fine, so its first command line works again with --resume."""
    from alscout.trainer.checkpoint import load_checkpoint

    if args.config is not None:
        raise ConfigError(
            f"--resume continues the run as it was configured; drop --config {args.config} "
            "(the checkpoint holds the run's settings)"
        )
    given = {flag: getattr(args, flag[2:].replace("-", "_"), None) for flag in _RESUMED}
    given["--no-scale-aug"] = augmentation["scale_aug"]
    given["--zoom-range"] = augmentation["zoom_range"]
    state = load_checkpoint(args.resume)
    configs = {"train": state.train, "detector": state.detector}
    changes = []
    for flag, (where, field) in _RESUMED.items():
        config = configs[where]
        if given[flag] is None or config is None:  # no train config stored: flags apply
            continue
        value, kept = given[flag], getattr(config, field)
        if isinstance(kept, list | tuple) and isinstance(value, list | tuple):
            kept, value = tuple(kept), tuple(value)
        if value == kept:
            continue
        if flag == "--no-scale-aug":
            changes.append(f"{flag} (the run zooms)")
        else:
            ran = _setting_text(flag, kept)
            changes.append(f"{flag} {_setting_text(flag, value)} (the run's is {ran})")
    if changes:
        raise ConfigError(
            f"--resume continues the run as it was configured; {args.resume} cannot take "
            f"{', '.join(changes)}: drop these flags, or start a new run with --init"
        )


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
    augmentation = _augmentation_overrides(args)
    if args.resume:
        _check_resume(args, augmentation)
    detector, train = load_toml(args.config) if args.config else (DetectorConfig(), TrainConfig())
    detector_changes = {
        "width": args.width,
        "dropout": args.dropout,
        "difficulty_head": args.difficulty_head,
    }
    detector_changes = {k: v for k, v in detector_changes.items() if v is not None}
    if detector_changes and not args.resume:  # on resume they equal the run's (checked)
        if args.init:
            raise ConfigError(
                "--width/--dropout/--difficulty-head cannot change the network of --init"
            )
        detector = DetectorConfig.from_dict({**detector.to_dict(), **detector_changes})
    train = train.with_overrides(
        epochs=args.epochs,
        batch_size=args.batch_size,
        input_size=args.input_size,
        lr=args.lr,
        lr_final=args.lr_final,
        seed=args.seed,
        hard_negatives=args.hard_negatives,
        average_weights=args.average_weights,
        device=args.device,
        num_workers=args.workers,
        cache_images=args.cache_images or None,
        **augmentation,
    )
    data, weights = _load_sources(args)
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
            weights=weights,
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
