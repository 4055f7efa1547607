"""``alscout fleet``: the fleet side of the loop, from uploads to a new model version.

Examples::

    alscout fleet ingest --pool pool/ uploads/car-1 uploads/car-2
    alscout fleet ingest --pool pool/ uploads/car-1 \\
        's3://fleet-uploads/car-2?endpoint_url=https://minio.local:9000&region=eu-west-1'
    alscout fleet export-tasks --pool pool/ --out tasks/cycle1 --registry models/
    alscout fleet import-labels --pool pool/ tasks/cycle1/labels.json   # COCO or Label Studio
    alscout fleet oracle --pool pool/ --ground-truth rec-1=data/rec1/annotations.json \\
        --out tasks/cycle1/labels.json          # synthetic data: ground truth labels
    alscout fleet finetune --pool pool/ --init runs/wl/last.pt --out runs/cycle1 \\
        --registry models/ --base-data data/src/annotations.json --val-data val.json
    torchrun --nproc-per-node 4 -m alscout.apps.cli fleet finetune ...   # 4 GPUs
    alscout fleet publish --registry models/ --model model.onnx --metrics '{"mr_fppi1": 0.3}'
    alscout fleet publish --registry models/ --model model.onnx \\
        --calibration-frames drives/day1.mp4 --rates 0.5% 1% 2%   # thresholds shipped

``ingest`` exits with 1 when it rejected an upload (each is named on stderr; the
rest are ingested), and with 2 (one line naming the URL, nothing written) when a sink
cannot be read at all: a missing folder or bucket, refused credentials. Every action's
errors end in one line that names it (``alscout fleet import-labels: ...``) and exit 2.
The server picks up a published version by watching the registry
(``alscout serve --model-registry``) or by an admin ``ReloadModel`` call.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from alscout.errors import AlscoutError, ConfigError

log = logging.getLogger(__name__)

__all__ = ["configure", "run"]


def _recording_file(text: str) -> tuple[str, Path]:
    recording, sep, path = text.partition("=")
    if not sep or not recording or not path:
        raise argparse.ArgumentTypeError(f"expected RECORDING=FILE, got {text!r}")
    return recording, Path(path)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``ingest``, ``export-tasks``, ``import-labels``, ``oracle``, ``finetune``
    and ``publish`` subcommands."""
    from alscout.trainer.cli_train import add_data_arguments

    sub = parser.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)

    ingest = sub.add_parser("ingest", help="gather upload sinks into the labeling pool")
    ingest.add_argument(
        "sinks",
        nargs="+",
        metavar="SINK",
        help="upload sinks, one per car: folders or s3://bucket/prefix[?endpoint_url=..&region=..]"
        " (as the car's --sink; credentials from boto3's usual chain)",
    )
    ingest.add_argument("--pool", type=Path, required=True, help="labeling pool folder")
    ingest.add_argument(
        "--max-distance", type=int, default=8, help="near-duplicate Hamming distance (of 64)"
    )
    ingest.add_argument("--no-dedup", action="store_true", help="keep near-duplicates")

    export = sub.add_parser("export-tasks", help="COCO + image list + Label Studio tasks")
    export.add_argument("--pool", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True, help="folder for the task files")
    export.add_argument("--all", action="store_true", help="also frames already labeled")
    export.add_argument("--url-prefix", help="Label Studio image URL prefix (local files)")
    model = export.add_mutually_exclusive_group()
    model.add_argument("--model", type=Path, help="pre-annotate with this ONNX model's detections")
    model.add_argument(
        "--registry", type=Path, help="pre-annotate with the registry's newest model version"
    )
    export.add_argument(
        "--pre-threshold", type=float, default=0.5,
        help="a detection's least score to be a pre-annotation (default 0.5)",
    )  # fmt: skip

    labels = sub.add_parser(
        "import-labels", help="apply finished labels (COCO or Label Studio JSON) to the pool"
    )
    labels.add_argument(
        "labels", type=Path, help="the labeling tool's export: COCO JSON or Label Studio JSON"
    )
    labels.add_argument("--pool", type=Path, required=True)

    oracle = sub.add_parser("oracle", help="label pool frames from ground truth (synthetic data)")
    oracle.add_argument("--pool", type=Path, required=True)
    oracle.add_argument(
        "--ground-truth",
        type=_recording_file,
        action="append",
        required=True,
        metavar="RECORDING=FILE",
        help="a recording's annotations (COCO or MOT); repeat per recording",
    )
    oracle.add_argument("--out", type=Path, required=True, help="COCO labels file to write")

    tune = sub.add_parser("finetune", help="finetune from w_l on the labeled set, then publish")
    tune.add_argument("--pool", type=Path, required=True)
    tune.add_argument("--init", type=Path, required=True, help="w_l: the initial checkpoint")
    tune.add_argument("--out", type=Path, required=True, help="run folder")
    tune.add_argument("--registry", type=Path, help="model registry to publish into")
    tune.add_argument("--notes", default="", help="notes for the registry manifest")
    tune.add_argument("--epochs", type=int, help="epochs (default: w_l's)")
    tune.add_argument("--batch-size", type=int, help="global batch (default: w_l's)")
    tune.add_argument("--lr", type=float, help="initial learning rate (default: w_l's)")
    tune.add_argument("--lr-final", type=float, help="final learning rate (default: w_l's)")
    tune.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: w_l's)")
    tune.add_argument("--seed", type=int, help="seed (default: w_l's)")
    tune.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    tune.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_data_arguments(tune, prefix="base-", required=False)
    _set_help(
        tune,
        "base_data",
        "the base labeled set w_l was trained on, trained on again with the pool's labels: "
        "COCO json, MOT gt.txt or a CityPersons folder",
    )
    add_data_arguments(tune, prefix="val-", required=False)

    publish = sub.add_parser("publish", help="publish an ONNX model into the registry")
    publish.add_argument("--registry", type=Path, required=True)
    publish.add_argument("--model", type=Path, required=True, help="ONNX file (alscout export)")
    publish.add_argument("--metrics", default="{}", help="JSON object of the model's figures")
    publish.add_argument("--notes", default="")
    publish.add_argument(
        "--calibration-frames", nargs="+", metavar="SOURCE",
        help="score these video files or image folders and ship the thresholds of "
        "--rates in the model (as alscout calibrate)",
    )  # fmt: skip
    publish.add_argument(
        "--rates", nargs="+", default=["0.5%", "1%", "2%"], metavar="RATE",
        help="target flag rates to calibrate (default 0.5%% 1%% 2%%)",
    )  # fmt: skip
    publish.add_argument(
        "--serve-config", metavar="TOML",
        help="the server's config file: its [pipeline] and [selector] settings",
    )  # fmt: skip
    publish.add_argument("--acquisition", metavar="NAME", help="as alscout serve --acquisition")
    publish.add_argument(
        "--quality-gate", action="store_true", default=None, help="as alscout serve --quality-gate"
    )
    publish.add_argument(
        "--calibration-max-frames", type=int, help="score at most this many frames of each"
    )


def _set_help(parser: argparse.ArgumentParser, dest: str, text: str) -> None:
    """Replace the help of the option stored in ``dest`` (a shared helper added it)."""
    for action in parser._actions:
        if action.dest == dest:
            action.help = text


def run(args: argparse.Namespace) -> int:
    """Run one fleet action; prints one summary line. An error ends in one line naming
    the action (``alscout fleet import-labels: ...``) and exit status 2."""
    action = {
        "ingest": _ingest,
        "export-tasks": _export,
        "import-labels": _import,
        "oracle": _oracle,
        "finetune": _finetune,
        "publish": _publish,
    }[args.fleet_command]
    try:
        return action(args)
    except AlscoutError as error:
        log.debug("fleet %s failed", args.fleet_command, exc_info=True)
        sys.stderr.write(f"alscout fleet {args.fleet_command}: {error}\n")
        return 2


def _ingest(args: argparse.Namespace) -> int:
    from alscout.trainer.fleet.ingest import IngestConfig, ingest
    from alscout.trainer.fleet.pool import LabelPool

    config = IngestConfig(max_distance=args.max_distance, dedup=not args.no_dedup)
    report = ingest(LabelPool(args.pool), args.sinks, config, progress=True)
    for rejection in report.rejected:
        sys.stderr.write(f"rejected: {rejection.reason}\n")
    sys.stdout.write(f"ingested pool={args.pool} {report.describe()}\n")
    return 1 if report.rejected else 0


def _export(args: argparse.Namespace) -> int:
    from alscout.trainer.fleet.pool import LabelPool
    from alscout.trainer.fleet.tasks import LABEL_STUDIO_URL_PREFIX, export_tasks

    pool = LabelPool(args.pool)
    items = pool.items if args.all else pool.unlabeled()
    predictions = None
    model = _pre_annotation_model(args)
    if model is not None:
        from alscout.trainer.fleet.preannotate import predict_boxes

        predictions = predict_boxes(pool, items, model, threshold=args.pre_threshold)
    result = export_tasks(
        pool,
        args.out,
        items=items,
        url_prefix=args.url_prefix or LABEL_STUDIO_URL_PREFIX,
        predictions=predictions,
    )
    pre = ""
    if predictions is not None:
        pre = f" predictions={result.predicted_boxes} model={predictions.model_version}"
    sys.stdout.write(
        f"exported images={result.count} coco={result.coco} list={result.image_list} "
        f"label_studio={result.label_studio}{pre}\n"
    )
    return 0


def _pre_annotation_model(args: argparse.Namespace) -> Path | None:
    """The model to pre-annotate with: ``--model``, the registry's newest, or None."""
    if args.model is not None:
        return Path(args.model)
    if args.registry is None:
        return None
    from alscout.runtime.model_registry import ModelRegistry

    latest = ModelRegistry(args.registry).latest()
    if latest is None:
        raise ConfigError(f"--registry {args.registry} holds no model version to pre-annotate with")
    latest.verify()
    return latest.path


def _import(args: argparse.Namespace) -> int:
    from alscout.trainer.fleet.pool import LabelPool
    from alscout.trainer.fleet.tasks import import_labels

    result = import_labels(LabelPool(args.pool), args.labels)
    sys.stdout.write(
        f"imported images={result.images} boxes={result.boxes} relabeled={result.relabeled}\n"
    )
    return 0


def _oracle(args: argparse.Namespace) -> int:
    from alscout.trainer.data.formats import read_dataset
    from alscout.trainer.fleet.oracle import oracle_labels
    from alscout.trainer.fleet.pool import LabelPool

    truth = {}
    for recording, path in args.ground_truth:
        if recording in truth:
            raise ConfigError(f"--ground-truth names recording {recording!r} twice")
        truth[recording] = read_dataset(path, None, None)
    out = oracle_labels(LabelPool(args.pool), truth, args.out)
    sys.stdout.write(f"wrote {out}\n")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    import torch

    from alscout.runtime.model_registry import ModelRegistry
    from alscout.trainer.checkpoint import load_checkpoint
    from alscout.trainer.cli_train import load_data
    from alscout.trainer.config import TrainConfig
    from alscout.trainer.distributed import init_distributed, shutdown
    from alscout.trainer.fleet.finetune import finetune, finetune_and_publish
    from alscout.trainer.fleet.pool import LabelPool

    if args.threads:
        torch.set_num_threads(args.threads)
    start = load_checkpoint(args.init)
    train = (start.train or TrainConfig()).with_overrides(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_final=args.lr_final,
        device=args.device,
        seed=args.seed,
    )
    base = val = None
    if args.base_data is not None:
        base = load_data(args.base_data, args.base_format, args.base_images, args.base_frames)
    if args.val_data is not None:
        val = load_data(args.val_data, args.val_format, args.val_images, args.val_frames)
    pool = LabelPool(args.pool)
    context = init_distributed(train.device)
    try:
        if args.registry is None:
            result = finetune(
                pool, args.init, args.out, train, base=base, context=context,
                progress=not args.no_progress,
            )  # fmt: skip
            if context.is_main:
                sys.stdout.write(f"finetuned checkpoint={result.checkpoint} {result.metrics}\n")
            return 0
        version = finetune_and_publish(
            pool,
            args.init,
            args.out,
            ModelRegistry(args.registry),
            train,
            base=base,
            val=val,
            context=context,
            notes=args.notes,
            progress=not args.no_progress,
        )
    finally:
        shutdown(context)
    if version is not None:
        sys.stdout.write(
            f"published version={version.version} path={version.path} "
            f"metrics={json.dumps(version.metrics, sort_keys=True)}\n"
        )
    return 0


def _publish(args: argparse.Namespace) -> int:
    from alscout.runtime.model_registry import ModelRegistry
    from alscout.runtime.shipped_thresholds import parse_rate
    from alscout.trainer.fleet.publish import calibrate_model, publish_model

    try:
        metrics = json.loads(args.metrics)
    except json.JSONDecodeError as error:
        raise ConfigError(f"--metrics is not JSON: {error}") from None
    if not isinstance(metrics, dict):
        raise ConfigError("--metrics must be a JSON object")
    calibration = None
    if args.calibration_frames:
        calibration = calibrate_model(
            args.model,
            args.calibration_frames,
            [parse_rate(r) for r in args.rates],
            serve_config=args.serve_config,
            acquisition=args.acquisition,
            quality_gate=args.quality_gate,
            max_frames=args.calibration_max_frames,
        )
    version = publish_model(
        ModelRegistry(args.registry), args.model, metrics=metrics, notes=args.notes,
        calibration=calibration,
    )  # fmt: skip
    line = f"published version={version.version} path={version.path}"
    if calibration is not None:
        shipped = ", ".join(f"{100 * r:g}% -> {v:.6g}" for r, v in calibration.thresholds)
        line += f" calibrated on {calibration.frames} frames: {shipped}"
    sys.stdout.write(line + "\n")
    return 0
