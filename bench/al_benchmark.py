"""The acquisition benchmark of issue #15: run (or resume) an experiment, then print
where its time went, per method, next to the wall time of this invocation.

The statistics themselves (paired differences with 90% CIs, instances per labeled
frame, the rank checks with block-bootstrap CIs) are in the run folder's
``summary.md`` and ``summary.json``; this script only runs the experiment and accounts
for its cost, so the CI budget of the small configuration can be checked::

    .venv/bin/python bench/al_benchmark.py --config configs/al/pets_benchmark_small.toml \\
        --out /tmp/al-bench-small
    .venv/bin/python bench/al_benchmark.py --config configs/al/pets_benchmark.toml \\
        --out /tmp/al-bench --seeds 0      # the full one, a seed at a time

A run folder that is already complete costs nothing more (every finished cycle is kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

from alscout.trainer.al.config import load_experiment
from alscout.trainer.al.driver import STATE_FILE, run_experiment


def _cost(out: Path, seeds: tuple[int, ...], method: str) -> tuple[int, float, float]:
    """(finished cycles, scoring seconds, finetuning seconds) over ``seeds``."""
    cycles, scoring, training = 0, 0.0, 0.0
    for seed in seeds:
        path = out / f"seed{seed}" / method / STATE_FILE
        if path.is_file():
            for cycle in json.loads(path.read_text(encoding="utf-8"))["cycles"]:
                cycles += 1
                scoring += float(cycle.get("scoring_seconds", 0.0))
                training += float(cycle.get("train_seconds", 0.0))
    return cycles, scoring, training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="experiment TOML")
    parser.add_argument("--out", type=Path, help="run folder (default: [experiment] out)")
    parser.add_argument("--seeds", type=int, nargs="+", help="override [experiment] seeds")
    parser.add_argument("--methods", nargs="+", help="override [experiment] methods")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = load_experiment(args.config, args.out)
    changes = {"seeds": tuple(args.seeds or ()), "methods": tuple(args.methods or ())}
    config = dataclasses.replace(config, **{k: v for k, v in changes.items() if v})
    load = os.getloadavg()
    began, cpu = time.perf_counter(), time.process_time()
    summary = run_experiment(config)
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    print(f"config {args.config}  out {config.out}")
    print(f"load at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, {os.cpu_count()} cores")
    print(f"this invocation: wall {wall:.0f} s, CPU {cpu:.0f} s (w_l, data and summary included)")
    print(f"{'method':<20} {'cycles':>6} {'scoring s':>10} {'finetune s':>11}")
    for method in config.methods:
        cycles, scoring, training = _cost(config.out, config.seeds, method)
        print(f"{method:<20} {cycles:>6} {scoring:>10.0f} {training:>11.0f}")
    print(f"summary {summary}")


if __name__ == "__main__":
    main()
