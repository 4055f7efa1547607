"""``alscout score SOURCE... --model M --out DIR``: score recorded drives off the vehicle.

The server's decode, pipeline and selection rule over whole recordings (video files,
image folders, MCAP files, ``s3://`` recordings), on worker processes here
(``--engine local``) or Ray actors (``--engine ray``, ``pip install 'alscout[fleet]'``).
Writes ``DIR/decisions.jsonl`` (the lines ``alscout stream --out`` writes, so
``alscout report`` reads it), ``DIR/scores.parquet`` (a row per frame) and the flagged
frames into a sink in the uploader's layout (``DIR/sink`` unless ``--sink``), which
``alscout fleet ingest`` reads. Re-running with the same ``--out`` skips the recordings
already committed and scores the rest (docs/fleet.md, "Scoring recordings off-line").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from alscout.server.cli import TARGET_RATE_HELP

if TYPE_CHECKING:
    from alscout.offline.earlier import EarlierUploads
    from alscout.offline.engine import Engine

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``alscout score``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  alscout score drives/*.mp4 --model model.onnx --out scored/\n"
        "  alscout score bags/*.mcap --model model.onnx --out scored/ --earlier pool/\n"
        "  alscout score s3://archive/drive-7.mcap --model model.onnx --out scored/ \\\n"
        "      --engine ray --ray-address auto --sink s3://fleet-uploads/rescored\n"
    )
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="video files, image folders, .mcap files or s3://bucket/key recordings",
    )
    parser.add_argument("--model", required=True, type=Path, help="ONNX model to score with")
    parser.add_argument("--out", required=True, type=Path, help="output folder (resumable)")
    parser.add_argument(
        "--engine", choices=("local", "ray"), default="local",
        help="local: worker processes here; ray: Ray actors (default local)",
    )  # fmt: skip
    parser.add_argument("--ray-address", help="Ray cluster to join (auto, HOST:6379, ray://...)")
    parser.add_argument(
        "--workers", type=int,
        help="worker processes or Ray actors (default: one per core; ray: per CPU or GPU)",
    )  # fmt: skip
    parser.add_argument("--recording-id", help="default: each source's name")
    parser.add_argument("--camera-id", help="default: the MCAP topic, else cam0")
    parser.add_argument("--topic", help="MCAP image topic (default: the first image topic)")
    parser.add_argument("--max-frames", type=int, help="score at most this many frames each")
    parser.add_argument(
        "--frame-encoding", choices=("raw", "jpeg", "png"), default="raw",
        help="how decoded frames are passed on, as alscout stream's (default raw)",
    )  # fmt: skip
    parser.add_argument(
        "--sink", metavar="URL",
        help="flagged frames go here, in the uploader's layout (default DIR/sink)",
    )  # fmt: skip
    parser.add_argument(
        "--earlier", type=Path, metavar="DIR",
        help="upload record for the dt2 rule: a fleet pool or a vehicle outbox folder",
    )  # fmt: skip
    parser.add_argument("--config", metavar="TOML", help="the server's config file")
    parser.add_argument("--backend", help="inference backend (default auto)")
    parser.add_argument("--threads", type=int, help="inference threads per worker")
    parser.add_argument("--threshold", help="flag threshold: a number or 'adaptive'")
    parser.add_argument("--target-rate", metavar="RATE", help=TARGET_RATE_HELP)
    parser.add_argument("--context-frames", type=int, help="frames stored before/after a flag")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Score; 0 when every recording is done, 1 when some failed (each named on stderr)."""
    from alscout.errors import ConfigError
    from alscout.offline.plan import plan_units
    from alscout.offline.run import score_recordings
    from alscout.offline.settings import from_server_config
    from alscout.server.cli import selector_overrides
    from alscout.server.config import load_config

    config = load_config(
        args.config,
        env=os.environ,
        overrides={
            "model_path": args.model,
            "backend": args.backend,
            "threads": args.threads,
            **selector_overrides(args.threshold, args.target_rate),
            "context_frames": args.context_frames,
        },
    )
    if not args.model.is_file():
        raise ConfigError(f"{args.model}: model file not found")
    units = plan_units(
        args.sources,
        recording_id=args.recording_id,
        camera_id=args.camera_id,
        topic=args.topic,
        max_frames=args.max_frames,
        frame_encoding=args.frame_encoding,
    )
    sink = args.sink or str(args.out / "sink")
    settings = from_server_config(config, sink, _earlier(args.earlier))
    engine = _engine(args, len(units))
    report = score_recordings(units, settings, args.out, engine, progress=not args.no_progress)
    for unit, message in report.failed:
        sys.stderr.write(f"failed: {unit.source}: {message}\n")
    rate = report.frames / max(report.elapsed_s, 1e-9)
    sys.stdout.write(
        f"scored {len(report.scored)} recordings ({len(report.skipped)} already done, "
        f"{len(report.failed)} failed): {report.frames} frames, {report.flagged} flagged in "
        f"{report.elapsed_s:.1f} s ({rate:.1f} frames/s, {engine.name} x{engine.workers}); "
        f"{report.recordings_total} recordings, {report.frames_total} frames in "
        f"{args.out / 'decisions.jsonl'} and {args.out / 'scores.parquet'}; flagged frames "
        f"in {sink}\n"
    )
    return 1 if report.failed else 0


def _earlier(path: Path | None) -> EarlierUploads:
    """The upload record for dt2: a fleet pool (manifest.json) or an outbox (index)."""
    from alscout.errors import ConfigError
    from alscout.offline.earlier import EarlierUploads, from_outbox

    if path is None:
        return EarlierUploads()
    if (path / "manifest.json").is_file():
        from alscout.trainer.fleet.pool import LabelPool

        return EarlierUploads.of(LabelPool(path).uploaded_frames(), str(path))
    if (path / "index.sqlite3").is_file():
        return from_outbox(path)
    raise ConfigError(
        f"--earlier {path}: neither a fleet pool (manifest.json) nor an outbox (index.sqlite3)"
    )


def _engine(args: argparse.Namespace, units: int) -> Engine:
    from alscout.errors import ConfigError

    if args.engine == "ray":
        from alscout.offline.ray_engine import RayEngine

        return RayEngine(args.workers or 0, address=args.ray_address)
    if args.ray_address:
        raise ConfigError("--ray-address needs --engine ray")
    from alscout.offline.local_engine import LocalEngine

    return LocalEngine(args.workers or max(1, min(os.cpu_count() or 1, units)))
