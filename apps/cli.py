"""The one command-line entry point: ``alscout <command> ...``.

Each command lives with its subsystem in a ``cli`` module that exposes
``configure(parser)`` and ``run(args) -> int``. Commands are listed in
:data:`COMMANDS` and imported only when chosen, so ``alscout serve`` on a
vehicle never imports PyTorch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from alscout import __version__
from alscout.errors import AlscoutError

log = logging.getLogger(__name__)

#: command name -> (module with ``configure`` and ``run``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("alscout.trainer.cli_data", "synthetic data, format conversion, evaluation"),
    "serve": ("alscout.server.cli", "run the gRPC scoring service on the vehicle"),
    "outbox": ("alscout.server.cli_outbox", "status, check and upload of the flagged-frame outbox"),
    "stream": ("alscout.server.cli_stream", "send a video, folder, MCAP or camera to a server"),
    "score": (
        "alscout.apps.score",
        "score recordings off-line: decisions, a Parquet table, flagged frames (local or Ray)",
    ),
    "calibrate": (
        "alscout.apps.calibrate",
        "score calibration frames and ship the thresholds of target flag rates in a model",
    ),
    "export": (
        "alscout.trainer.cli_export",
        "export a checkpoint to ONNX, .pt2 or a TensorRT engine",
    ),
    "train": ("alscout.trainer.cli_train", "train or finetune the pedestrian detector"),
    "evaluate": ("alscout.trainer.cli_evaluate", "Caltech miss rate of a trained detector"),
    "al": ("alscout.trainer.al.cli", "active-learning experiments: cycles, baselines, ablations"),
    "fleet": ("alscout.trainer.fleet.cli", "uploads -> labeling pool -> finetune -> publish"),
    "report": (
        "alscout.apps.report",
        "HTML report of a streamed recording: scores, flags, heat maps",
    ),
    "demo": ("alscout.apps.demo", "train, serve, stream, upload and report on this machine"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (to add its options).

    Every command is listed with its help line; ``command=None`` imports none of them
    (``alscout --help``), so the vehicle's ``alscout serve`` never loads the trainer.
    """
    parser = argparse.ArgumentParser(
        prog="alscout",
        description="Score camera frames for active learning of object detectors.",
    )
    parser.add_argument("--version", action="version", version=f"alscout {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.configure(command_parser)
            command_parser.set_defaults(_module=module)
    return parser


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The command named in ``argv``: its first word that is not an option."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors the user can fix end in one line and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_chosen_command(argv))
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args._module.run(args) or 0)
    except AlscoutError as error:
        log.debug("command failed", exc_info=True)
        sys.stderr.write(f"alscout {args.command}: {error}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"alscout {args.command}: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
