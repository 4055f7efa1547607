"""What an experiment reports: per-cycle tables over seeds (``summary.md``, ``summary.json``)
and the figures of :mod:`alscout.trainer.al.plots`.

Everything is read back from the run folders (``seed<s>/w0/done.json``,
``seed<s>/<method>/state.json``, ``.../cycle<c>/eval.json`` and, for scored methods,
``.../cycle<c>/pool_frames.json``), so the summary of a partly finished or resumed run
can be rebuilt at any time. Cycle 0 is ``w_l``. Run folders written before a field
existed stay readable: what they lack is shown as "-".

``summary.json``: per method ``{metric: {cycle: {seed: value}}}``, and under the key
``"benchmark"`` the statistics of :mod:`alscout.trainer.al.stats` (see
:func:`benchmark_json`): means over seeds, the reference method minus every other,
paired by seed, with Student-t intervals, and the two rank checks with their
block-bootstrap intervals.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alscout.errors import ConfigError, DataError
from alscout.trainer.al.config import ExperimentConfig
from alscout.trainer.al.stats import (
    LEVEL,
    RANK_CHECKS,
    PairedDifference,
    RankCheck,
    paired_difference,
    pool_rank_checks,
    rank_rng,
)

__all__ = [
    "MethodRuns",
    "Comparison",
    "collect",
    "compare",
    "benchmark_json",
    "write_outputs",
    "mean_spread",
    "BASELINES",
    "POOL_FRAMES",
]

log = logging.getLogger(__name__)

#: Methods the paper's method is compared with, cycle by cycle (figures).
BASELINES = (
    "guided_random",
    "entropy",
    "least_confidence",
    "mc_dropout",
    "divergence_count",
    "difficulty",
    "random",
)
#: The state field of each rank check's Spearman correlation (its interval: _low, _high).
RANK_FIELDS = {"errors": "spearman_z_errors", "error_rate": "spearman_z_error_rate"}
_METRICS = (
    "mr_at_fppi1",
    "lamr",
    "instances",
    "instances_per_frame",
    "scoring_seconds",
    "scored_frames",
    "pick_errors",
    "control_errors",
    "control_instances",
    *(f"{key}{end}" for key in RANK_FIELDS.values() for end in ("", "_low", "_high")),
)
#: Per cycle of a scored method (the driver writes it): z and the error counts of every
#: unlabeled pool frame, what the rank checks resample.
POOL_FRAMES = "pool_frames.json"


@dataclass
class MethodRuns:
    """One method's per-cycle values: ``values[metric][cycle] -> {seed: value}``;
    ``frames[cycle] -> {seed: pool_frames.json}`` where the run kept them.

    Cycle 0 (``w_l``) carries the shared test metrics; ``instances`` there is 0.
    """

    method: str
    values: dict[str, dict[int, dict[int, float]]] = field(default_factory=dict)
    frames: dict[int, dict[int, Path]] = field(default_factory=dict)

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
                c = cycle["cycle"]
                if "instances_per_frame" not in cycle and cycle.get("picks"):  # older runs
                    cycle["instances_per_frame"] = cycle["instances"] / len(cycle["picks"])
                for metric in _METRICS:
                    value = cycle.get(metric)
                    if value is None:
                        continue
                    run.values.setdefault(metric, {}).setdefault(c, {})[seed] = float(value)
                frames = state_path.parent / f"cycle{c:02d}" / POOL_FRAMES
                if frames.is_file():
                    run.frames.setdefault(c, {})[seed] = frames
    return runs


@dataclass
class Comparison:
    """The benchmark's statistics of a run folder (:mod:`alscout.trainer.al.stats`).

    ``paired[metric][cycle][method]``: ``reference`` minus ``method``, paired by seed;
    ``over_cycles[metric][method]``: the same for each seed's mean over cycles 1-K (the
    area under the learning curve over the cycle axis, divided by K), seeds that
    finished every cycle of both methods; ``ranks[check][method][cycle]``: the rank
    check over the seeds that kept their pool frames (None where a seed that finished
    the cycle did not: an older run).
    """

    reference: str
    paired: dict[str, dict[int, dict[str, PairedDifference]]]
    ranks: dict[str, dict[str, dict[int, RankCheck | None]]]
    over_cycles: dict[str, dict[str, PairedDifference]] = field(default_factory=dict)


def _cycles(runs: dict[str, MethodRuns]) -> list[int]:
    return sorted({c for r in runs.values() for c in r.cycles})


def _rank_checks(run: MethodRuns, cycle: int) -> dict[str, RankCheck] | None:
    files = run.frames.get(cycle, {})
    finished = set(run.series("mr_at_fppi1", cycle))
    if not files or not finished <= set(files):
        return None
    frames = [_load(files[s]) for s in sorted(files) if s in finished]
    return pool_rank_checks(frames, functools.partial(rank_rng, cycle, run.method))


def compare(runs: dict[str, MethodRuns], reference: str) -> Comparison:
    """Paired differences against ``reference`` and the rank checks, per cycle."""
    if reference not in runs:
        raise ConfigError(f"reference method {reference!r} is not one of {list(runs)}")
    cycles = [c for c in _cycles(runs) if c > 0]
    others = [m for m in runs if m != reference]
    paired: dict[str, dict[int, dict[str, PairedDifference]]] = {}
    over_cycles: dict[str, dict[str, PairedDifference]] = {}
    for metric in ("mr_at_fppi1", "lamr"):
        for c in cycles:
            ours = runs[reference].series(metric, c)
            for m in others:
                theirs = runs[m].series(metric, c)
                paired.setdefault(metric, {}).setdefault(c, {})[m] = _paired_by_seed(ours, theirs)
        ours = _curve_means(runs[reference], metric, cycles)
        for m in others:
            theirs = _curve_means(runs[m], metric, cycles)
            over_cycles.setdefault(metric, {})[m] = _paired_by_seed(ours, theirs)
    ranks: dict[str, dict[str, dict[int, RankCheck | None]]] = {k: {} for k in RANK_CHECKS}
    for m, run in runs.items():
        for c in run.cycles:
            points = run.series(RANK_FIELDS["errors"], c).values()
            if c == 0 or (not run.frames.get(c) and not any(map(math.isfinite, points))):
                continue  # cycle 0, or a random method: no z
            checks = _rank_checks(run, c)
            for k in RANK_CHECKS:
                ranks[k].setdefault(m, {})[c] = None if checks is None else checks[k]
    return Comparison(reference, paired, ranks, over_cycles)


def _paired_by_seed(ours: dict[int, float], theirs: dict[int, float]) -> PairedDifference:
    """``ours`` minus ``theirs`` (seed -> value) over the seeds both have."""
    seeds = sorted(set(ours) & set(theirs))
    return paired_difference([ours[s] for s in seeds], [theirs[s] for s in seeds])


def _curve_means(run: MethodRuns, metric: str, cycles: Sequence[int]) -> dict[int, float]:
    """Per seed that finished every one of ``cycles``: the mean of ``metric`` over them."""
    if not cycles:
        return {}
    series = [run.series(metric, c) for c in cycles]
    seeds = set.intersection(*(set(values) for values in series))
    return {s: float(np.mean([values[s] for values in series])) for s in sorted(seeds)}


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


def _paired_cell(d: PairedDifference | None) -> str:
    """Percentage points: mean [interval] (wins/pairs); bold when the interval
    excludes 0."""
    if d is None or d.n == 0:
        return "-"
    ci = f"{100 * d.low:+.2f}, {100 * d.high:+.2f}" if math.isfinite(d.low) else "n/a"
    text = f"{100 * d.mean:+.2f} [{ci}] ({d.wins}/{d.n})"
    return f"**{text}**" if math.isfinite(d.low) and (d.high < 0 or d.low > 0) else text


def _rank_cell(check: RankCheck | None, points: Sequence[float]) -> str:
    if check is not None and math.isfinite(check.rho):
        ci = f"{check.low:.2f}, {check.high:.2f}" if math.isfinite(check.low) else "n/a"
        return f"{check.rho:.2f} [{ci}]"
    cell = _cell(points)  # a run without per-frame counts: no interval
    return cell if cell == "-" else f"{cell} (no CI)"


def _table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _paired_lines(runs: dict[str, MethodRuns], comparison: Comparison) -> list[str]:
    ref = comparison.reference
    others = [m for m in runs if m != ref]
    if not others:
        return []
    lines: list[str] = []
    for metric, title in (("mr_at_fppi1", "MR@FPPI=1"), ("lamr", "LAMR")):
        lines += [
            "",
            f"## {ref} minus each other method, {title} (percentage points, paired by seed)",
            "",
            f"Mean [{100 * LEVEL:.0f}% CI: Student t on the paired differences; n/a with "
            f"one seed] (seeds where {ref} is lower / pairs). Negative: {ref} better; "
            "bold: the interval excludes 0. The last row pairs each seed's mean over the "
            "cycles (the area under its learning curve), seeds that finished them all.",
            "",
        ]
        by_cycle = sorted(comparison.paired.get(metric, {}).items())
        rows = [
            [str(c)] + [_paired_cell(by_method.get(m)) for m in others] for c, by_method in by_cycle
        ]
        over = comparison.over_cycles.get(metric, {})
        if len(by_cycle) > 1 and over:
            label = f"mean of {by_cycle[0][0]}-{by_cycle[-1][0]}"
            rows.append([label] + [_paired_cell(over.get(m)) for m in others])
        lines += _table(["cycle", *others], rows)
    return lines


def _rank_lines(runs: dict[str, MethodRuns], comparison: Comparison) -> list[str]:
    checks = [c for by_cycle in comparison.ranks["errors"].values() for c in by_cycle.values()]
    methods = [m for m in runs if m in comparison.ranks["errors"]]
    if not methods:
        return []
    known = [c for c in checks if c is not None]
    how = (
        f"blocks of {known[0].block} consecutive pool frames, {known[0].resamples} resamples"
        if known
        else "blocks of consecutive pool frames"
    )
    lines = [
        "",
        "## Rank checks: does z rank the unlabeled pool by the detector's errors?",
        "",
        "Spearman's rank correlation over the unlabeled pool frames of a cycle, with the "
        "detector that scored them, of z and the frame's errors at the [evaluation] "
        "error threshold: FP + FN, and the error rate (FP + FN) / (GT + FP) (0 when "
        "GT + FP = 0; GT: persons that count). Mean over seeds [90% CI: circular "
        f"block bootstrap over the pool in video order, {how}, the same blocks for every "
        "seed, percentile interval; conditional on the trained detectors]. A dash: no "
        "correlation exists because z or the error measure is the same for every frame "
        "(a detector that finds nobody at the error threshold misses every person: its "
        "error rate is 1 on every frame with one).",
    ]
    for check, title in (("errors", "z vs FP + FN"), ("error_rate", "z vs (FP + FN) / (GT + FP)")):
        lines += ["", f"### {title}", ""]
        cycles = sorted({c for m in methods for c in comparison.ranks[check].get(m, {})})
        rows = [
            [str(c)]
            + [
                _rank_cell(
                    comparison.ranks[check].get(m, {}).get(c),
                    list(runs[m].series(RANK_FIELDS[check], c).values()),
                )
                for m in methods
            ]
            for c in cycles
        ]
        lines += _table(["cycle", *methods], rows)
    return lines


def summary_lines(
    runs: dict[str, MethodRuns], config: ExperimentConfig, comparison: Comparison | None = None
) -> list[str]:
    """The markdown summary: tables of mean ± sample std over seeds, per cycle, and
    ``comparison`` (default: against the experiment's first method)."""
    comparison = comparison or compare(runs, config.methods[0])
    methods = list(runs)
    cycles = _cycles(runs)
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
    lines += _paired_lines(runs, comparison)
    lines += ["", "## Pedestrian instances per labeled frame (the cycle's picks)", ""]
    rows = [
        [str(c)] + [_cell(list(runs[m].series("instances_per_frame", c).values())) for m in methods]
        for c in cycles
        if c > 0
    ]
    lines += _table(["cycle", *methods], rows)
    lines += ["", "## Pedestrian instances in the selected frames (cumulative)", ""]
    rows = [
        [str(c)] + [_cell(list(runs[m].cumulative_instances(c).values()), 1, 1) for m in methods]
        for c in cycles
        if c > 0
    ]
    lines += _table(["cycle", *methods], rows)
    lines += _rank_lines(runs, comparison)
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


def _plain(value: Any) -> Any:
    """JSON without NaN: NaN and infinities become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def benchmark_json(runs: dict[str, MethodRuns], comparison: Comparison) -> dict[str, Any]:
    """``summary.json["benchmark"]``: ``reference``, ``level``; ``mean[metric][method]
    [cycle]`` = {mean, std, n} over seeds (mr_at_fppi1, lamr as fractions;
    instances_per_frame); ``paired[metric][cycle][method]`` = {mean, low, high, n, wins}
    (reference minus method, fractions); ``paired_over_cycles[metric][method]`` the same
    for each seed's mean over the cycles; ``rank_checks[check][method][cycle]`` = {rho,
    low, high, runs, frames, block, resamples} or null (a run without pool frames).
    Missing values are null."""
    means: dict[str, Any] = {}
    for metric in ("mr_at_fppi1", "lamr", "instances_per_frame"):
        for m, run in runs.items():
            for c in sorted(run.values.get(metric, {})):
                mean, std, n = mean_spread(list(run.series(metric, c).values()))
                means.setdefault(metric, {}).setdefault(m, {})[c] = {
                    "mean": mean, "std": std, "n": n
                }  # fmt: skip
    return _plain(
        {
            "reference": comparison.reference,
            "level": LEVEL,
            "mean": means,
            "paired": {
                metric: {c: {m: asdict(d) for m, d in row.items()} for c, row in by_cycle.items()}
                for metric, by_cycle in comparison.paired.items()
            },
            "paired_over_cycles": {
                metric: {m: asdict(d) for m, d in row.items()}
                for metric, row in comparison.over_cycles.items()
            },
            "rank_checks": {
                check: {
                    m: {c: None if r is None else asdict(r) for c, r in by_cycle.items()}
                    for m, by_cycle in by_method.items()
                }
                for check, by_method in comparison.ranks.items()
            },
        }
    )


def write_outputs(out: Path, config: ExperimentConfig, reference: str | None = None) -> Path:
    """Write ``summary.md``, ``summary.json`` and the figures into ``out``; returns the .md.

    ``reference``: the method every other is compared with, paired by seed (default:
    the experiment's first method).
    """
    from alscout.trainer.al.plots import draw_all

    runs = collect(out, config)
    comparison = compare(runs, reference or config.methods[0])
    path = out / "summary.md"
    figures = draw_all(out, runs, config, comparison)
    lines = summary_lines(runs, config, comparison)
    lines += ["", "## Figures", ""] + [f"- `{p.relative_to(out)}`" for p in figures]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    raw: dict[str, Any] = {m: r.values for m, r in runs.items()}
    raw["benchmark"] = benchmark_json(runs, comparison)
    (out / "summary.json").write_text(json.dumps(raw, indent=1), encoding="utf-8")
    log.info("summary written path=%s figures=%d", path, len(figures))
    return path
