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
    "export": ("alscout.export.cli", "export a checkpoint to ONNX, .pt2 or a TensorRT engine"),
    "train": ("alscout.trainer.cli_train", "train or finetune the pedestrian detector"),
    "evaluate": ("alscout.trainer.cli_evaluate", "Caltech miss rate of a trained detector"),
    "al": ("alscout.trainer.al.cli", "active-learning experiments: cycles, baselines, ablations"),
    "fleet": ("alscout.trainer.fleet.cli", "uploads -> labeling pool -> finetune -> publish"),
    "report": ("alscout.report", "HTML report of a streamed recording: scores, flags, heat maps"),
    "demo": ("alscout.demo", "train, serve, stream, upload and report on this machine"),
}


def build_parser() -> argparse.ArgumentParser:
    """The full parser; command modules are imported here to add their options."""
    parser = argparse.ArgumentParser(
        prog="alscout",
        description="Score camera frames for active learning of object detectors.",
    )
    parser.add_argument("--version", action="version", version=f"alscout {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(command_parser)
        command_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors the user can fix end in one line and exit status 2."""
    parser = build_parser()
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
