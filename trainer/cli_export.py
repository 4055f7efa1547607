"""``alscout export``: a trained checkpoint to ONNX (or .pt2), and ONNX to a TensorRT engine.

Examples::

    alscout export onnx --checkpoint runs/c3/model.pt --out models/ped-c3.onnx \\
        --verify-frames ../shared/data/pets09_s2l1/vtest.avi
    alscout export trt --onnx models/ped-c3.onnx --out models/ped-c3.engine --precision fp16 \\
        --verify-frames ../shared/data/pets09_s2l1/vtest.avi
    alscout export trt --onnx models/ped-c3.onnx --out models/ped-c3-int8.engine \\
        --precision int8 --calib-frames frames/ --calib-limit 256
    alscout export pt2 --checkpoint runs/c3/model.pt --out models/ped-c3.pt2
    alscout export onnx --checkpoint runs/c3/model.pt --out models/ped-c3-scored.onnx \\
        --scores-in-graph --radius 9 --region 30 --verify-frames frames/
    alscout export onnx --checkpoint runs/c3/model.pt --out models/ped-c3-int8.onnx \\
        --int8 --calibration-frames ../shared/data/pets09_s2l1/vtest.avi \\
        --quality-data ../shared/data/pets09_s2l1/gt.txt \\
        --quality-images ../shared/data/pets09_s2l1/vtest.avi --quality-frames 601-795

Every export is verified before it is written: ONNX against PyTorch (1e-4 absolute),
engines against ONNX Runtime (docs/runtime.md lists the tolerances) and by the top-20
frames by image score. A failed verification leaves no output file, exits with 2 and
names the values over the tolerance (how many, the worst one's ``[n, k, y, x]`` and both
values there). ``--atol``/``--rtol`` set another per-value tolerance: a value passes when
``|diff| <= atol + rtol * |reference|``.

``--scores-in-graph`` writes a model whose graph computes the image score itself
(SPEC §4): outputs ``z`` and ``heatmap`` (``probs`` too with ``--keep-probs``), double
evaluation inside unless ``--no-double-eval``. The plain export is verified as above,
then the in-graph one against it plus the Numba scoring (z to 1e-4 relative, the heat
map to 1e-3 absolute).

``--int8`` writes an ONNX Runtime INT8 model (static QDQ quantisation of the
convolutions, calibrated on ``--calibration-frames``, the TensorRT INT8 path's kind of
folder or video; export/quantize.py). The float32 export is verified as above, then
INT8 against it (probabilities within 0.5 per value and 2e-3 on average, the same
top-20 frames by z; ``--atol``/``--rtol`` set that tolerance, the float32 step keeps
1e-4) on held-out frames: ``--verify-frames`` from another source, else the
calibration source's frames after those calibration reads. With ``--quality-data``
(and ``--quality-images``/``--quality-frames``) both models' MR@FPPI=1 are compared;
more than one point lost is a warning and a flag in the model's metadata
(``alscout.quantization.quality``), not a failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alscout.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from alscout.export.verify import Tolerance
    from alscout.runtime.model_info import GraphScoring
    from alscout.trainer.checkpoint_export import Int8Export

__all__ = ["configure", "run"]


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return height, width


def _add_tolerance(command: argparse.ArgumentParser, default_atol: str) -> None:
    command.add_argument(
        "--atol",
        type=float,
        help=f"verification: absolute tolerance per probability (default {default_atol}); "
        "the mean difference may be a tenth of it",
    )
    command.add_argument(
        "--rtol",
        type=float,
        default=0.0,
        help="verification: tolerance relative to the reference probability, added to "
        "--atol (default 0)",
    )


def _tolerance(args: argparse.Namespace, standard: Tolerance) -> Tolerance:
    """``standard`` with ``--atol``/``--rtol`` applied.

    The mean bound keeps its ratio to the per-value one (a tenth in every standard
    tolerance), so one flag moves both; the ranking check stays as it is.
    """
    if args.atol is None:
        return dataclasses.replace(standard, rtol=args.rtol)
    ratio = standard.mean_abs / standard.max_abs if standard.max_abs > 0 else 1.0
    return dataclasses.replace(
        standard, max_abs=args.atol, mean_abs=args.atol * ratio, rtol=args.rtol
    )


def _add_scores_in_graph(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group(
        "scores inside the graph",
        "the model outputs z [N] and heatmap [N, ceil(H/s), ceil(W/s)] instead of probs; "
        "the server must be configured with the same settings (it refuses the model "
        "otherwise)",
    )
    group.add_argument(
        "--scores-in-graph",
        action="store_true",
        help="compute the image score (SPEC §1) inside the exported graph",
    )
    group.add_argument(
        "--no-double-eval",
        dest="double_eval",
        action="store_false",
        default=None,
        help="leave out double evaluation (each frame with its mirror, averaged)",
    )
    group.add_argument("--method", choices=("divergence", "entropy"), help="pixel score")
    group.add_argument("--radius", type=int, help="window radius r (default 9)")
    group.add_argument("--region", type=int, help="aggregation region side R (default 30)")
    group.add_argument(
        "--aggregation", choices=("maxpool", "mean"), help="z from S (default maxpool)"
    )
    group.add_argument("--heatmap-stride", type=int, help="heat-map block side (default 16)")
    group.add_argument("--keep-probs", action="store_true", default=None, help="also output probs")


def _add_int8(command: argparse.ArgumentParser) -> None:
    from alscout.trainer.cli_train import add_data_arguments

    group = command.add_argument_group(
        "INT8 (ONNX Runtime)",
        "a statically quantised model (QDQ: the convolutions but the first and the logits "
        "in INT8), verified against the float32 export on held-out frames; --quality-* "
        "name labelled images to compare their MR@FPPI=1 on",
    )
    group.add_argument("--int8", action="store_true", help="write an INT8 model")
    group.add_argument(
        "--calibration-frames",
        type=Path,
        metavar="DIR",
        help="folder of frames or a video to calibrate on (needed with --int8)",
    )
    group.add_argument(
        "--calibration-limit", type=int, default=256, help="frames to calibrate on (256)"
    )
    group.add_argument(
        "--calibration-stride", type=int, default=1, help="calibrate on every S-th frame (1)"
    )
    # an argument group takes the same add_argument calls as the parser it is typed for
    add_data_arguments(group, prefix="quality-", required=False)  # type: ignore[arg-type]


def _int8(args: argparse.Namespace) -> Int8Export | None:
    """The INT8 settings of ``export onnx``, or None without ``--int8``."""
    from alscout.export.verify import INT8_TOLERANCE
    from alscout.trainer.checkpoint_export import Int8Export

    if not getattr(args, "int8", False):
        if getattr(args, "calibration_frames", None) or getattr(args, "quality_data", None):
            raise ConfigError("--calibration-frames and --quality-data only apply with --int8")
        return None
    if args.calibration_frames is None:
        raise ConfigError("--int8 needs --calibration-frames (a folder of frames or a video)")
    quality = None
    if args.quality_data is not None:
        from alscout.trainer.cli_train import load_data

        quality = load_data(
            args.quality_data, args.quality_format, args.quality_images, args.quality_frames
        )
    return Int8Export(
        args.calibration_frames,
        limit=args.calibration_limit,
        stride=args.calibration_stride,
        verify_limit=args.verify_limit,
        tolerance=_tolerance(args, INT8_TOLERANCE),
        quality=quality,
    )


_SCORE_FLAGS = {
    "double_eval": "--no-double-eval",
    "method": "--method",
    "radius": "--radius",
    "region": "--region",
    "aggregation": "--aggregation",
    "heatmap_stride": "--heatmap-stride",
    "keep_probs": "--keep-probs",
}


def _scoring(args: argparse.Namespace) -> GraphScoring | None:
    """The in-graph settings of ``export onnx``, or None without ``--scores-in-graph``."""
    from alscout.runtime.model_info import GraphScoring

    if not getattr(args, "scores_in_graph", False):
        given = [flag for key, flag in _SCORE_FLAGS.items() if getattr(args, key, None) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply with --scores-in-graph")
        return None
    defaults = GraphScoring()
    try:
        return GraphScoring(
            radius=defaults.radius if args.radius is None else args.radius,
            region=defaults.region if args.region is None else args.region,
            method=args.method or defaults.method,
            aggregation=args.aggregation or defaults.aggregation,
            double_evaluation=args.double_eval is not False,
            heatmap_stride=(
                defaults.heatmap_stride if args.heatmap_stride is None else args.heatmap_stride
            ),
        )
    except ModelError as error:  # the settings' own check says which flag is wrong
        message = str(error).replace("scores in the graph: ", "--")
        raise ConfigError(message.replace("heatmap_stride", "heatmap-stride")) from None


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``onnx``, ``pt2`` and ``trt`` subcommands."""
    sub = parser.add_subparsers(dest="export_command", metavar="FORMAT", required=True)

    for name, help_text in (
        ("onnx", "checkpoint -> ONNX model with the model contract's metadata"),
        ("pt2", "checkpoint -> torch.export program for the PyTorch reference backend"),
    ):
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--checkpoint", type=Path, required=True, help="trainer checkpoint")
        command.add_argument("--out", type=Path, required=True, help=f"the .{name} file to write")
        command.add_argument("--version", help="model version (default: the checkpoint's)")
        command.add_argument(
            "--input-size", type=_size, help="WIDTHxHEIGHT (default: the training input size)"
        )
        command.add_argument(
            "--training-data-digest",
            help="digest of the training data (default: the one stored in the checkpoint)",
        )
        command.add_argument("--verify-frames", type=Path, help="folder or video of real frames")
        command.add_argument("--verify-limit", type=int, default=40, help="frames to verify on")
        _add_tolerance(command, "1e-4")
        if name == "onnx":
            command.add_argument("--opset", type=int, default=17, help="ONNX opset (17)")
            _add_scores_in_graph(command)
            _add_int8(command)

    trt = sub.add_parser(
        "trt",
        help="ONNX -> TensorRT engine (needs tensorrt and an NVIDIA GPU)",
        description="Build, cache and verify a TensorRT engine for this machine's GPU.",
    )
    trt.add_argument("--onnx", type=Path, required=True, help="ONNX model from `export onnx`")
    trt.add_argument("--out", type=Path, required=True, help="engine file (.engine)")
    trt.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16")
    trt.add_argument(
        "--batch-sizes",
        type=int,
        nargs="*",
        default=[16],
        help="exact-shape profiles at the input size, in images per call (16 = 8 frames and "
        "their mirrors)",
    )
    trt.add_argument(
        "--max-batch", type=int, default=16, help="largest batch of the general profile"
    )
    trt.add_argument("--calib-frames", type=Path, help="INT8: folder or video of frames")
    trt.add_argument("--calib-limit", type=int, default=256, help="INT8: frames to calibrate on")
    trt.add_argument(
        "--cache-dir", type=Path, help="engine cache (default ~/.cache/alscout/engines)"
    )
    trt.add_argument("--no-cache", action="store_true", help="always build")
    trt.add_argument("--verify-frames", type=Path, help="folder or video of real frames")
    trt.add_argument("--verify-limit", type=int, default=200, help="frames to verify on")
    _add_tolerance(trt, "per precision, docs/runtime.md")
    trt.add_argument("--workspace-gib", type=float, default=4.0, help="builder scratch memory")
    trt.add_argument("--device", type=int, default=0, help="CUDA device")


def run(args: argparse.Namespace) -> int:
    """Export, verify, write; prints the verification report."""
    if args.verify_limit < 1:
        raise ConfigError(f"--verify-limit must be >= 1, got {args.verify_limit}")
    for flag, value in (("--atol", args.atol), ("--rtol", args.rtol)):
        if value is not None and not value >= 0:  # also refuses NaN
            raise ConfigError(f"{flag} must be a number >= 0, got {value}")
    try:
        report = _trt(args) if args.export_command == "trt" else _from_checkpoint(args)
    except ModelError as error:
        if not str(error).startswith("verification failed"):
            raise
        raise ModelError(
            f"{error}\nnothing written; if these differences are acceptable, "
            "set the tolerance with --atol/--rtol"
        ) from error
    sys.stdout.write(report + "\n")
    return 0


def _frames(args: argparse.Namespace) -> list[Any]:
    if args.verify_frames is None:
        return []
    calibration = getattr(args, "calibration_frames", None) if getattr(args, "int8", 0) else None
    if calibration is not None and args.verify_frames.resolve() == calibration.resolve():
        return []  # the INT8 export takes the frames calibration does not read
    from alscout.export.frames import read_frames

    return read_frames(args.verify_frames, limit=args.verify_limit)


def _from_checkpoint(args: argparse.Namespace) -> str:
    from alscout.export.onnx import DEFAULT_OPSET
    from alscout.export.verify import ONNX_TOLERANCE
    from alscout.trainer.checkpoint_export import export_checkpoint

    scoring = _scoring(args)
    int8 = _int8(args)
    report = export_checkpoint(
        args.checkpoint,
        args.out,
        fmt=args.export_command,
        version=args.version,
        training_data_digest=args.training_data_digest,
        input_size=args.input_size,
        opset=getattr(args, "opset", DEFAULT_OPSET),  # pt2 has no --opset
        frames=_frames(args),
        # with --int8, --atol/--rtol are INT8's; the float32 step keeps SPEC §4's
        tolerance=ONNX_TOLERANCE if int8 else _tolerance(args, ONNX_TOLERANCE),
        scores=scoring,
        keep_probs=bool(getattr(args, "keep_probs", False)),
        int8=int8,
    )
    assert report is not None  # verify=True, the default, always reports
    return f"wrote {args.out}\n{report.describe()}"


def _trt(args: argparse.Namespace) -> str:
    from alscout.export.cache import EngineCache
    from alscout.export.calibration import CalibrationBatches
    from alscout.export.tensorrt import build_engine
    from alscout.export.verify import ENGINE_TOLERANCES, verify_export
    from alscout.runtime.backends import open_backend
    from alscout.runtime.backends.profiles import default_profiles
    from alscout.runtime.backends.tensorrt import sidecar_path

    onnx_backend = open_backend(args.onnx, "onnxruntime-cpu")
    info = onnx_backend.model_info
    if info.scoring is not None:
        raise ConfigError(
            f"{args.onnx} has the scores inside its graph; engines are built from plain "
            "models (export one without --scores-in-graph), or serve this file with the "
            "onnxruntime-tensorrt backend"
        )
    profiles = default_profiles(info.input_size, args.max_batch, tuple(args.batch_sizes))
    calibration = None
    if args.precision == "int8":
        if args.calib_frames is None:
            raise ConfigError("--precision int8 needs --calib-frames (a folder or a video)")
        calibration = CalibrationBatches(args.calib_frames, info, limit=args.calib_limit)
    cache = None if args.no_cache else EngineCache(args.cache_dir)
    out, from_cache = build_engine(
        args.onnx,
        args.out,
        precision=args.precision,
        profiles=profiles,
        calibration=calibration,
        cache=cache,
        device_id=args.device,
        workspace_gib=args.workspace_gib,
    )
    try:
        with onnx_backend, open_backend(out, "tensorrt", device_id=args.device) as engine:
            report = verify_export(
                onnx_backend,
                engine,
                _tolerance(args, ENGINE_TOLERANCES[args.precision]),
                frames=_frames(args),
            )
        report.raise_for_failure()
    except BaseException:
        if cache is not None:
            cache.discard(out)  # a failing engine must not be served from the cache again
        out.unlink(missing_ok=True)
        sidecar_path(out).unlink(missing_ok=True)
        raise
    source = "from the cache" if from_cache else "built"
    return f"wrote {out} ({source})\n{report.describe()}"
