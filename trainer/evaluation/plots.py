"""Miss rate against FPPI plots, as in the Caltech benchmark's figures (PNG, matplotlib Agg).

Both axes are logarithmic; the legend gives each curve's log-average miss rate, and
the 9 FPPI points it samples are marked. matplotlib is imported when a plot is drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from alscout.errors import InvalidInputError
from alscout.trainer.evaluation.caltech import EvalResult

__all__ = ["plot_mr_fppi"]

log = logging.getLogger(__name__)


def plot_mr_fppi(
    results: Mapping[str, EvalResult],
    path: Path | str,
    title: str = "",
    fppi_range: tuple[float, float] = (1e-3, 1e1),
) -> Path:
    """Draw one curve per named result into a PNG at ``path``; returns the path.

    Curves are drawn as steps (the miss rate holds until the next threshold); the
    legend is ordered by log-average miss rate, best first.
    """
    if not results:
        raise InvalidInputError("nothing to plot: results is empty")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.0, 4.8), dpi=100)
    try:
        for name, result in sorted(results.items(), key=lambda item: item[1].lamr):
            fppi = np.asarray(result.fppi, np.float64)
            miss = np.asarray(result.miss_rate, np.float64)
            # extend to the right edge so the last miss rate shows
            fppi = np.append(np.maximum(fppi, fppi_range[0]), fppi_range[1])
            miss = np.append(miss, miss[-1])
            label = f"{100 * result.lamr:.1f}% {name}"
            (line,) = ax.step(fppi, np.maximum(miss, 1e-4), where="post", label=label)
            ax.plot(
                result.reference_fppi,
                np.maximum(result.reference_mr, 1e-4),
                "o",
                color=line.get_color(),
                markersize=3,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(*fppi_range)
        ax.set_ylim(0.05, 1.0)
        ax.set_yticks([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.64, 0.8, 1.0])
        ax.set_yticklabels(["0.05", "0.1", "0.2", "0.3", "0.4", "0.5", "0.64", "0.8", "1"])
        ax.set_xlabel("false positives per image")
        ax.set_ylabel("miss rate")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower left", fontsize=8, title="log-average miss rate")
        if title:
            ax.set_title(title)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    finally:
        plt.close(fig)
    log.info("wrote plot path=%s curves=%d", path, len(results))
    return path
