"""``alscout calibrate --model M.onnx --frames SOURCE``: ship flag thresholds in a model.

Scores the calibration frames (video files, image folders, MCAP files, ``s3://``
recordings, as ``alscout score`` reads them) with the model through the server's
decode and pipeline, smooths and selects them as the streaming rule does, and writes
the thresholds of the target flag rates (``--rates``, default 0.5% 1% 2%) into the
model's ONNX metadata (in place, or into ``--out``). With ``--registry`` the
calibrated model is published as the registry's next version, the thresholds also in
its entry's metrics. ``alscout serve --target-rate 1%`` then flags at about 1% from
the first frame (docs/temporal.md, "Shipped thresholds").

The thresholds hold for the settings they were calibrated with (acquisition function,
its settings, input size, quality gate, dt, sigma, dt1): pass the server's ``--config``
(and ``--acquisition`` / ``--quality-gate`` as given to ``alscout serve``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from alscout.runtime.model_info import FlagCalibration
    from alscout.server.config import ServerConfig

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``alscout calibrate``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  alscout calibrate --model model.onnx --frames drives/day1.mp4\n"
        "  alscout calibrate --model model.onnx --frames drives/ bags/run3.mcap \\\n"
        "      --rates 0.5% 1% 2% --out model-calibrated.onnx\n"
        "  alscout calibrate --model model.onnx --frames drives/day1.mp4 --registry models/\n"
    )
    parser.add_argument("--model", required=True, type=Path, help="ONNX model to calibrate")
    parser.add_argument(
        "--frames", required=True, nargs="+", metavar="SOURCE",
        help="calibration recordings: video files, image folders, .mcap files, s3:// keys",
    )  # fmt: skip
    parser.add_argument(
        "--rates", nargs="+", default=["0.5%", "1%", "2%"], metavar="RATE",
        help="target flag rates, as 1%% or 0.01 (default 0.5%% 1%% 2%%)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, help="write the calibrated model here (default: in place)"
    )
    parser.add_argument(
        "--registry", type=Path, metavar="DIR",
        help="also publish the calibrated model as the next version of this model registry",
    )  # fmt: skip
    parser.add_argument("--notes", default="", help="notes of the registry entry")
    parser.add_argument("--config", metavar="TOML", help="the server's config file")
    parser.add_argument("--acquisition", metavar="NAME", help="as alscout serve --acquisition")
    parser.add_argument(
        "--quality-gate", action="store_true", default=None, help="as alscout serve --quality-gate"
    )
    parser.add_argument("--backend", help="inference backend (default auto)")
    parser.add_argument("--threads", type=int, help="inference threads")
    parser.add_argument("--max-frames", type=int, help="score at most this many frames of each")
    parser.add_argument("--topic", help="MCAP image topic (default: the first image topic)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Calibrate, write the thresholds, publish when asked; prints one summary line."""
    from alscout.errors import ConfigError
    from alscout.runtime.backends.registry import open_backend
    from alscout.runtime.pipeline import ScoringPipeline
    from alscout.runtime.shipped_thresholds import calibrate, parse_rate, write_calibration
    from alscout.server.config import load_config

    rates = [parse_rate(r) for r in args.rates]
    if not args.model.is_file():
        raise ConfigError(f"{args.model}: model file not found")
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
    config = load_config(
        args.config,
        env=os.environ,
        overrides={
            "model_path": args.model,
            "backend": args.backend,
            "threads": args.threads,
            "pipeline.method": args.acquisition,
            "pipeline.quality": args.quality_gate,
        },
    )
    backend = open_backend(config.model_path, config.backend, threads=config.threads)
    with ScoringPipeline(backend, config.pipeline) as pipeline, _progress(args) as bar:
        calibration = calibrate(
            pipeline,
            (_frames(source, args, config) for source in args.frames),
            config.selector,
            rates,
            source=", ".join(args.frames),
            on_frames=bar.update,
        )
    written = write_calibration(args.model, calibration, args.out)
    summary = _summary(calibration)
    line = f"calibrated {written} on {calibration.frames} frames: {summary}"
    if args.registry is not None:
        from alscout.runtime.model_registry import ModelRegistry
        from alscout.trainer.fleet.publish import publish_model

        version = publish_model(
            ModelRegistry(args.registry), written, metrics={}, notes=args.notes,
            calibration=calibration,
        )  # fmt: skip
        line += f"; published version={version.version} path={version.path}"
    sys.stdout.write(line + "\n")
    return 0


def _frames(source: str, args: argparse.Namespace, config: ServerConfig) -> Iterator[np.ndarray]:
    """The decoded RGB frames of one recording, as the server decodes them."""
    from alscout.server.messages import decode
    from alscout.server.sources import open_source

    with open_source(source, topic=args.topic, max_frames=args.max_frames) as frames:
        for item in itertools.islice(frames, args.max_frames):
            message = item.to_stream_frame().message("calibration", "cam0", False)
            image, *_ = decode(message, config.max_pixels, config.metadata_limits)
            yield image


def _summary(calibration: FlagCalibration) -> str:
    pairs = ", ".join(f"{100 * r:g}% -> {v:.6g}" for r, v in calibration.thresholds)
    return f"{calibration.candidates} local maxima; thresholds {pairs}"


def _progress(args: argparse.Namespace) -> Any:
    """A progress bar of frames scored (on stderr)."""
    from tqdm import tqdm

    return tqdm(unit="frame", desc="calibrate", disable=args.no_progress, file=sys.stderr)
