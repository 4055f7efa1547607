"""Issue #14's must-show in one command: train with and without scale augmentation, then
evaluate the held-out frames at several zooms, one Markdown table.

Every arm (the default recipe on each ``--seeds``, the mirroring-only recipe
``--no-scale-aug`` on each ``--baseline-seeds``, and any ``--variant``) trains in its own
``alscout train`` process, all at once: on a GPU they share the device, on the CPU give
each ``--threads``. Each arm is evaluated as soon as it finishes (``alscout evaluate
--mirror --zoom Z`` for every ``--zooms``, on ``--device``), with SPEC's head-size boxes
and any other ``--box-sizes``. The table gives MR@FPPI=1 (LAMR) per zoom, the ratio of
each zoom's MR to zoom 1's, the fewest boxes any head got in any epoch (per head) and the
median epoch time; the same figures go to ``results.json``. On a GPU machine::

    python bench/scale_recipe.py --out runs/recipe --device cuda --width 16 --size 640x480 \\
        --seeds 0 1 2 --workers 3

PETS 2009 S2.L1 frames 1-600 / 601-795 unless ``--data``/``--images``/``--train-frames``/
``--test-frames`` say otherwise. ``--deadline-s``: arms still training or evaluating then
are stopped and reported as not finished.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("scale_recipe")

PETS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pets09_s2l1"
CLI = [sys.executable, "-m", "alscout.apps.cli"]


@dataclass(frozen=True)
class Arm:
    """One training: its name in the table, its seed and its recipe's own flags."""

    name: str
    seed: int
    flags: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What an arm gave: ``scores[(box_size, zoom)] = (MR@FPPI=1, LAMR)`` in percent."""

    arm: Arm
    scores: dict[tuple[str, float], tuple[float, float]] = field(default_factory=dict)
    fewest_boxes: tuple[int, ...] = ()
    epoch_seconds: float = float("nan")
    epochs: int = 0
    error: str = ""


def parse_variant(text: str) -> tuple[str, tuple[str, ...]]:
    """``NAME=FLAGS`` (``zp08=--zoom-prob 0.8``) -> ``(NAME, FLAGS split as a shell does)``."""
    name, sep, flags = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"a variant is NAME=FLAGS, got {text!r}")
    return name, tuple(shlex.split(flags))


def arms_of(
    seeds: list[int], baseline_seeds: list[int], variants: list[tuple[str, tuple[str, ...]]]
) -> list[Arm]:
    """The default recipe per seed, mirroring only per baseline seed, each variant per seed."""
    arms = [Arm(f"zoom s{s}", s) for s in seeds]
    arms += [Arm(f"no zoom s{s}", s, ("--no-scale-aug",)) for s in baseline_seeds]
    arms += [Arm(f"{name} s{s}", s, flags) for name, flags in variants for s in seeds]
    return arms


def _run(command: list[str], log_path: Path, deadline: float) -> None:
    """Run ``command`` with its output in ``log_path``; stop it at ``deadline``."""
    with open(log_path, "a", encoding="utf-8") as out:
        out.write("$ " + shlex.join(command) + "\n")
        out.flush()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the deadline passed before it started")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, check=True,
                timeout=remaining, env=env,
            )  # fmt: skip
        except subprocess.TimeoutExpired as error:
            raise TimeoutError("stopped at the deadline") from error


def history_figures(history: list[dict[str, Any]]) -> tuple[tuple[int, ...], float]:
    """Per head the fewest boxes it got in any epoch, and the median epoch seconds."""
    boxes = [record["train"]["head_boxes"] for record in history]
    fewest = tuple(min(column) for column in zip(*boxes, strict=True))
    return fewest, statistics.median(record["train"]["seconds"] for record in history)


def run_arm(arm: Arm, args: argparse.Namespace, deadline: float) -> Outcome:
    """Train ``arm``, then evaluate it at every zoom and box size."""
    outcome = Outcome(arm)
    run_dir = args.out / arm.name.replace(" ", "_")
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "log.txt"
    data = ["--data", str(args.data), "--images", str(args.images)]
    train = [*CLI, "train", *data, "--frames", args.train_frames, "--out", str(run_dir)]
    train += ["--input-size", args.size, "--width", str(args.width), "--epochs", str(args.epochs)]
    train += ["--batch-size", str(args.batch_size), "--seed", str(arm.seed), "--cache-images"]
    train += ["--device", args.device, "--workers", str(args.workers), "--no-progress"]
    train += ["--threads", str(args.threads), *arm.flags]
    try:
        started = time.monotonic()
        _run(train, log_path, deadline)
        log.info("%s trained in %.0f s", arm.name, time.monotonic() - started)
        history = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
        outcome.epochs = len(history)
        outcome.fewest_boxes, outcome.epoch_seconds = history_figures(history)
        for box_size in args.box_sizes:
            for zoom in args.zooms:
                result = run_dir / f"eval_{box_size}_z{zoom:g}.json"
                evaluate = [*CLI, "evaluate", "--checkpoint", str(run_dir / "last.pt"), *data]
                evaluate += ["--frames", args.test_frames, "--mirror", "--zoom", str(zoom)]
                evaluate += ["--box-size", box_size, "--device", args.device, "--no-progress"]
                evaluate += ["--threads", str(args.threads), "--out-json", str(result)]
                _run(evaluate, log_path, deadline)
                figures = json.loads(result.read_text(encoding="utf-8"))
                outcome.scores[(box_size, zoom)] = (
                    100 * figures["mr_at_fppi1"],
                    100 * figures["lamr"],
                )
    except subprocess.CalledProcessError as error:
        outcome.error = f"alscout {error.cmd[3]} exited with {error.returncode} (see {log_path})"
        log.warning("%s: %s", arm.name, outcome.error)
    except (TimeoutError, OSError, KeyError, ValueError) as error:
        outcome.error = f"{type(error).__name__}: {error} (see {log_path})"
        log.warning("%s: %s", arm.name, outcome.error)
    return outcome


def report(outcomes: list[Outcome], args: argparse.Namespace) -> str:
    """The Markdown table of every arm, per box size."""
    lines = [
        f"Train {args.train_frames}, evaluate {args.test_frames} with --mirror; width "
        f"{args.width}, {args.size}, {args.epochs} epochs, batch {args.batch_size}, "
        f"device {args.device}. MR@FPPI=1 % (LAMR %); ratio: MR / MR at zoom 1.",
        "",
    ]
    zooms = args.zooms
    for box_size in args.box_sizes:
        header = ["arm", *(f"zoom {z:g}" for z in zooms)]
        header += [*(f"ratio {z:g}" for z in zooms if z != 1), "fewest boxes per head"]
        header += ["epoch s (median)"]
        lines += [f"Boxes: {box_size}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + " --- |" * len(header))
        for o in outcomes:
            cells = [o.arm.name]
            for z in zooms:
                mr = o.scores.get((box_size, z))
                cells.append(f"{mr[0]:.2f} ({mr[1]:.2f})" if mr else "-")
            base = o.scores.get((box_size, 1.0))
            for z in zooms:
                if z == 1:
                    continue
                mr = o.scores.get((box_size, z))
                ok = mr and base and base[0] > 0
                cells.append(f"{mr[0] / base[0]:.2f}x" if ok else "-")
            cells.append("/".join(map(str, o.fewest_boxes)) or "-")
            cells.append(f"{o.epoch_seconds:.1f}" + (f" ({o.epochs} ep)" if o.epochs else ""))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"- {o.arm.name}: not finished: {o.error}" for o in outcomes if o.error]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="one folder per arm, report.md")
    parser.add_argument("--data", type=Path, default=PETS / "gt.txt")
    parser.add_argument("--images", type=Path, default=PETS / "vtest.avi")
    parser.add_argument("--train-frames", default="1-600")
    parser.add_argument("--test-frames", default="601-795")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--baseline-seeds", type=int, nargs="*", help="default: the first seed")
    parser.add_argument("--variant", type=parse_variant, action="append", default=[])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--zooms", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--box-sizes", nargs="+", default=["head"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0, help="loader processes per arm")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads per arm")
    parser.add_argument("--deadline-s", type=float, default=float("inf"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if 1.0 not in args.zooms:
        parser.error("--zooms must include 1: the ratios are to zoom 1")
    baseline = args.seeds[:1] if args.baseline_seeds is None else args.baseline_seeds
    arms = arms_of(args.seeds, baseline, args.variant)
    deadline = time.monotonic() + args.deadline_s
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=len(arms)) as pool:
        outcomes = list(pool.map(lambda arm: run_arm(arm, args, deadline), arms))
    text = report(outcomes, args)
    (args.out / "report.md").write_text(text, encoding="utf-8")
    rows = [
        {
            "arm": o.arm.name,
            "seed": o.arm.seed,
            "flags": list(o.arm.flags),
            "scores": [
                {"box_size": b, "zoom": z, "mr_at_fppi1": mr, "lamr": lamr}
                for (b, z), (mr, lamr) in o.scores.items()
            ],
            "fewest_head_boxes": list(o.fewest_boxes),
            "median_epoch_s": o.epoch_seconds,
            "epochs": o.epochs,
            "error": o.error,
        }
        for o in outcomes
    ]
    (args.out / "results.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    sys.stdout.write(text)
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
