"""What an experiment reports: per-cycle tables over seeds (``summary.md``, ``summary.json``)
and the figures of :mod:`alscout.trainer.al.plots`.

Everything is read back from the run folders (``seed<s>/w0/done.json``,
``seed<s>/<method>/state.json``, ``.../cycle<c>/eval.json``), so the summary of a
partly finished or resumed run can be rebuilt at any time. Cycle 0 is ``w_l``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alscout.errors import DataError
from alscout.trainer.al.config import ExperimentConfig

__all__ = ["MethodRuns", "collect", "write_outputs", "mean_spread", "BASELINES"]

log = logging.getLogger(__name__)

#: Methods the paper's method is compared with, cycle by cycle.
BASELINES = ("guided_random", "entropy", "mc_dropout", "random")
_METRICS = (
    "mr_at_fppi1",
    "lamr",
    "instances",
    "scoring_seconds",
    "scored_frames",
    "spearman_z_errors",
    "pick_errors",
    "control_errors",
    "control_instances",
)


@dataclass
class MethodRuns:
    """One method's per-cycle values: ``values[metric][cycle] -> {seed: value}``.

    Cycle 0 (``w_l``) carries the shared test metrics; ``instances`` there is 0.
    """

    method: str
    values: dict[str, dict[int, dict[int, float]]] = field(default_factory=dict)

    def series(self, metric: str, cycle: int) -> dict[int, float]:
        return self.values.get(metric, {}).get(cycle, {})

    @property
    def cycles(self) -> list[int]:
        return sorted(self.values.get("mr_at_fppi1", {}))

    def cumulative_instances(self, cycle: int) -> dict[int, float]:
        """Pedestrian instances in all frames picked up to ``cycle``, per seed that
        finished ``cycle``."""
        totals: dict[int, float] = {}
        for c in self.cycles:
            if 0 < c <= cycle:
                for seed, v in self.series("instances", c).items():
                    totals[seed] = totals.get(seed, 0.0) + v
        finished = self.series("instances", cycle)
        return {seed: v for seed, v in totals.items() if seed in finished}


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: unreadable run file ({error})") from error


def collect(out: Path, config: ExperimentConfig) -> dict[str, MethodRuns]:
    """Read every finished cycle of every seed and method under ``out``."""
    runs = {m: MethodRuns(m) for m in config.methods}
    for seed in config.seeds:
        w0 = out / f"seed{seed}" / "w0" / "done.json"
        base = _load(w0) if w0.is_file() else None
        for method, run in runs.items():
            if base is not None:
                for metric in ("mr_at_fppi1", "lamr"):
                    run.values.setdefault(metric, {}).setdefault(0, {})[seed] = base[metric]
                run.values.setdefault("instances", {}).setdefault(0, {})[seed] = 0.0
            state_path = out / f"seed{seed}" / method / "state.json"
            if not state_path.is_file():
                continue
            for cycle in _load(state_path)["cycles"]:
                for metric in _METRICS:
                    value = cycle.get(metric)
                    if value is None:
                        continue
                    run.values.setdefault(metric, {}).setdefault(cycle["cycle"], {})[seed] = float(
                        value
                    )
    return runs


def mean_spread(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation, count) of the finite values; NaN when none."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan"), 0
    spread = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return float(np.mean(finite)), spread, len(finite)


def _cell(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    mean, spread, n = mean_spread([v * scale for v in values])
    if n == 0:
        return "-"
    return f"{mean:.{digits}f} ± {spread:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def _table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _paired(a: dict[int, float], b: dict[int, float]) -> list[float]:
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def summary_lines(runs: dict[str, MethodRuns], config: ExperimentConfig) -> list[str]:
    """The markdown summary: tables of mean ± sample std over seeds, per cycle."""
    methods = list(runs)
    cycles = sorted({c for r in runs.values() for c in r.cycles})
    lines = [
        f"# Active-learning experiment `{config.name}`",
        "",
        f"Seeds {list(config.seeds)}; b = {config.budget} frames per cycle, K = "
        f"{config.cycles} cycles, {config.control} random control frames per cycle. "
        "Cells: mean ± sample standard deviation over seeds (a single value when one "
        "seed finished). Cycle 0 is w_l, before any frame of the pool is labeled.",
        "",
        "## Miss rate at FPPI = 1 (%, lower is better)",
        "",
    ]
    for metric, title in (("mr_at_fppi1", None), ("lamr", "## Log-average miss rate (%)")):
        if title:
            lines += ["", title, ""]
        rows = [
            [str(c)] + [_cell(list(runs[m].series(metric, c).values()), 100) for m in methods]
            for c in cycles
        ]
        lines += _table(["cycle", *methods], rows)
    lines += ["", "## Pedestrian instances in the selected frames (cumulative)", ""]
    rows = [
        [str(c)] + [_cell(list(runs[m].cumulative_instances(c).values()), 1, 1) for m in methods]
        for c in cycles
        if c > 0
    ]
    lines += _table(["cycle", *methods], rows)
    if "divergence" in runs:
        others = [m for m in methods if m != "divergence"]
        lines += [
            "",
            "## Divergence minus each other method, MR@FPPI=1 (percentage points, paired by "
            "seed; negative: divergence better; wins = seeds where divergence is lower)",
            "",
        ]
        rows = []
        for c in cycles:
            if c == 0:
                continue
            row = [str(c)]
            for m in others:
                ours = runs["divergence"].series("mr_at_fppi1", c)
                diff = _paired(ours, runs[m].series("mr_at_fppi1", c))
                wins = sum(d < 0 for d in diff)
                row.append(f"{_cell(diff, 100)} ({wins}/{len(diff)})" if diff else "-")
            rows.append(row)
        lines += _table(["cycle", *others], rows)
    lines += [
        "",
        "## Control slice: the current detector's errors (FP + FN per frame) and instances",
        "",
        "Errors are counted before the frames are trained on, at the error threshold of "
        "[evaluation]; picks are the method's frames, control the random slice of the "
        "same cycle. Spearman: rank correlation of z and errors over the unlabeled pool.",
        "",
    ]
    rows = []
    for m in methods:
        run = runs[m]
        flat = {
            k: [v for c in run.cycles if c > 0 for v in run.series(k, c).values()]
            for k in ("pick_errors", "control_errors", "spearman_z_errors")
        }
        seconds = [v for c in run.cycles for v in run.series("scoring_seconds", c).values()]
        frames = [v for c in run.cycles for v in run.series("scored_frames", c).values()]
        ms = 1000 * sum(seconds) / sum(frames) if sum(frames) else float("nan")
        rows.append(
            [m, _cell(flat["pick_errors"]), _cell(flat["control_errors"]),
             _cell(flat["spearman_z_errors"]), "-" if math.isnan(ms) else f"{ms:.1f}"]
        )  # fmt: skip
    lines += _table(
        ["method", "errors/frame, picks", "errors/frame, control", "Spearman(z, errors)",
         "scoring ms/frame"], rows,
    )  # fmt: skip
    return lines


def write_outputs(out: Path, config: ExperimentConfig) -> Path:
    """Write ``summary.md``, ``summary.json`` and the figures into ``out``; returns the .md."""
    from alscout.trainer.al.plots import draw_all

    runs = collect(out, config)
    path = out / "summary.md"
    figures = draw_all(out, runs, config)
    lines = summary_lines(runs, config)
    lines += ["", "## Figures", ""] + [f"- `{p.relative_to(out)}`" for p in figures]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    raw = {m: r.values for m, r in runs.items()}
    (out / "summary.json").write_text(json.dumps(raw, indent=1), encoding="utf-8")
    log.info("summary written path=%s figures=%d", path, len(figures))
    return path
