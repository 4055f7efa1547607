"""``alscout al``: active-learning experiments (the paper's cycles, baselines, ablations).

Examples::

    alscout al run --config configs/al/ci.toml
    alscout al run --config configs/al/ci.toml --out /tmp/al-ci --seeds 0 1 2
    alscout al summary --config configs/al/ci.toml --out /tmp/al-ci

``run`` resumes a stopped run in the same ``--out`` folder (each finished cycle is
kept), and pauses with exit status 3 when a human labeling round is due
(``[experiment] oracle = "files"``): label the frames it lists, run it again.
PyTorch is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from alscout.errors import ConfigError

__all__ = ["configure", "run"]

#: Exit status of ``al run`` when it stops to wait for a labeling round.
EXIT_PENDING = 3


def configure(parser: argparse.ArgumentParser) -> None:
    """Subcommands ``run`` and ``summary``."""
    sub = parser.add_subparsers(dest="al_command", metavar="SUBCOMMAND", required=True)
    for name, text in (
        ("run", "run or resume an experiment, then write its summary and figures"),
        ("summary", "rewrite summary.md and the figures from the finished cycles"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", type=Path, required=True, help="experiment TOML")
        p.add_argument("--out", type=Path, help="run folder (default: [experiment] out)")
        p.add_argument("--seeds", type=int, nargs="+", help="override [experiment] seeds")
        p.add_argument("--methods", nargs="+", help="override [experiment] methods")
        p.add_argument("--cycles", type=int, help="override [experiment] cycles")
        p.add_argument("--threads", type=int, help="CPU threads (default: [experiment])")
        p.add_argument(
            "--initial-checkpoint",
            type=Path,
            help="use this trained detector as w_l instead of training one",
        )
        if name == "summary":
            p.add_argument(
                "--reference", metavar="METHOD",
                help="the method every other is paired with (default: the first method)",
            )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run or summarise; prints the summary's path."""
    from alscout.trainer.al.config import load_experiment
    from alscout.trainer.al.oracle import LabelingPending

    config = load_experiment(args.config, args.out)
    given = args.initial_checkpoint
    changes = {
        "seeds": tuple(args.seeds) if args.seeds else None,
        "methods": tuple(args.methods) if args.methods else None,
        "cycles": args.cycles,
        "threads": args.threads,
        "initial_checkpoint": given.resolve() if given is not None else None,
    }
    try:
        config = dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
    except TypeError as error:
        raise ConfigError(str(error)) from error
    if args.al_command == "summary":
        from alscout.trainer.al.outputs import write_outputs

        path = write_outputs(config.out, config, reference=args.reference)
    else:
        from alscout.trainer.al.driver import run_experiment

        def report(message: str) -> None:
            sys.stderr.write(message + "\n")

        try:
            path = run_experiment(config, on_cycle=report)
        except LabelingPending as pending:
            sys.stderr.write(f"alscout al run: paused: {pending}\n")
            return EXIT_PENDING
    sys.stdout.write(f"summary {path}\n")
    return 0
