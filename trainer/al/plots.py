"""Figures of an experiment, in the manner of the paper's (PNG, matplotlib Agg).

- ``fig5_mr_fppi_<method>.png``: MR-FPPI curves of one method per cycle, first seed
  (paper Fig. 5 left and middle; Fig. 6 for entropy and MC dropout).
- ``fig5_mr_at_fppi1.png``: miss rate at FPPI = 1 per cycle, mean and spread over
  seeds, for the paper's method and its baselines (Fig. 5 right).
- ``fig7_instances.png``: pedestrian instances in the selected frames, cumulative
  per cycle (Fig. 7).
- ``fig10_ablations.png``: miss rate at FPPI = 1 per cycle for the paper's method and
  its ablations (Fig. 10).
- ``paired_mr_at_fppi1.png``, ``paired_lamr.png``: the reference method minus each
  other, paired by seed, per cycle, with the 90% intervals of
  :func:`alscout.trainer.al.stats.paired_difference` (not in the paper).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from alscout.trainer.al.config import ExperimentConfig
from alscout.trainer.al.outputs import BASELINES, Comparison, MethodRuns, mean_spread
from alscout.trainer.al.stats import LEVEL
from alscout.trainer.evaluation.caltech import EvalResult
from alscout.trainer.evaluation.plots import plot_mr_fppi

__all__ = ["draw_all", "plot_per_cycle", "plot_paired"]

log = logging.getLogger(__name__)

_ABLATIONS = ("divergence_mean", "divergence_no_smoothing", "divergence_no_rules")


def _eval(path: Path) -> EvalResult | None:
    if not path.is_file():
        return None
    return EvalResult(**json.loads(path.read_text(encoding="utf-8")))


def plot_per_cycle(
    runs: dict[str, MethodRuns], methods: list[str], path: Path, ylabel: str, what: str
) -> Path:
    """One line per method over cycles with a band of ±1 std over seeds.

    ``what``: "mr_at_fppi1" (plotted in %) or "instances" (cumulative).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    try:
        for m in methods:
            run = runs[m]
            cycles = [c for c in run.cycles if what != "instances" or c > 0]
            if what == "instances":
                stats = [mean_spread(list(run.cumulative_instances(c).values())) for c in cycles]
            else:
                stats = [
                    mean_spread([100 * v for v in run.series(what, c).values()]) for c in cycles
                ]
            mean = np.array([s[0] for s in stats])
            spread = np.array([s[1] for s in stats])
            (line,) = ax.plot(cycles, mean, marker="o", label=m)
            ax.fill_between(cycles, mean - spread, mean + spread, color=line.get_color(), alpha=0.2)
        _save_by_cycle(fig, ax, path, ylabel)
    finally:
        plt.close(fig)
    return path


def plot_paired(comparison: Comparison, metric: str, path: Path, ylabel: str) -> Path | None:
    """The reference minus each other method per cycle (percentage points): the mean
    with its interval as an error bar (a bare point with one seed). None: nothing to
    draw."""
    rows = comparison.paired.get(metric, {})
    methods = sorted({m for row in rows.values() for m, d in row.items() if d.n > 0})
    if not methods:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.0), dpi=100)
    try:
        width = 0.6 / len(methods)
        for i, m in enumerate(methods):
            cycles = [c for c in sorted(rows) if m in rows[c] and rows[c][m].n > 0]
            ds = [rows[c][m] for c in cycles]
            x = np.array(cycles, np.float64) + (i - (len(methods) - 1) / 2) * width
            mean = np.array([100 * d.mean for d in ds])
            below = [100 * (d.mean - d.low) if math.isfinite(d.low) else 0.0 for d in ds]
            above = [100 * (d.high - d.mean) if math.isfinite(d.high) else 0.0 for d in ds]
            ax.errorbar(x, mean, yerr=[below, above], fmt="o", capsize=3, label=m)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(f"{comparison.reference} minus each method (negative: it is better)")
        _save_by_cycle(fig, ax, path, ylabel)
    finally:
        plt.close(fig)
    return path


def draw_all(
    out: Path,
    runs: dict[str, MethodRuns],
    config: ExperimentConfig,
    comparison: Comparison | None = None,
) -> list[Path]:
    """Every figure the finished cycles allow; returns the files written."""
    figures = out / "figures"
    written: list[Path] = []
    seed = config.seeds[0]
    w0 = _eval(out / f"seed{seed}" / "w0" / "eval.json")
    for m in runs:
        curves = {} if w0 is None else {"cycle 0 (w_l)": w0}
        for c in runs[m].cycles:
            result = _eval(out / f"seed{seed}" / m / f"cycle{c:02d}" / "eval.json")
            if result is not None and c > 0:
                curves[f"cycle {c}"] = result
        if curves:
            written.append(
                plot_mr_fppi(curves, figures / f"fig5_mr_fppi_{m}.png", title=f"{m}, seed {seed}")
            )
    main = [m for m in ("divergence", *BASELINES) if m in runs and runs[m].cycles]
    if main:
        written.append(
            plot_per_cycle(runs, main, figures / "fig5_mr_at_fppi1.png", "MR at FPPI=1 (%)",
                           "mr_at_fppi1")
        )  # fmt: skip
        written.append(
            plot_per_cycle(runs, main, figures / "fig7_instances.png",
                           "pedestrian instances selected", "instances")
        )  # fmt: skip
    ablations = [m for m in ("divergence", *_ABLATIONS) if m in runs and runs[m].cycles]
    if len(ablations) > 1:
        written.append(
            plot_per_cycle(runs, ablations, figures / "fig10_ablations.png", "MR at FPPI=1 (%)",
                           "mr_at_fppi1")
        )  # fmt: skip
    for metric, label in (("mr_at_fppi1", "MR at FPPI=1"), ("lamr", "LAMR")):
        if comparison is not None:
            ylabel = f"difference in {label} (percentage points, {100 * LEVEL:.0f}% CI)"
            drawn = plot_paired(comparison, metric, figures / f"paired_{metric}.png", ylabel)
            written += [drawn] if drawn is not None else []
    log.info("figures written folder=%s count=%d", figures, len(written))
    return written


def _save_by_cycle(fig: Any, ax: Any, path: Path, ylabel: str) -> None:
    """Label a per-cycle figure's axes, add the legend and write it to ``path``."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("cycle")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
