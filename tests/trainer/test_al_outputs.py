"""The summary and figures of an experiment, from run folders with known numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from alscout.trainer.al.config import DataSpec, ExperimentConfig
from alscout.trainer.al.outputs import collect, mean_spread, write_outputs
from alscout.trainer.evaluation.caltech import evaluate

# seed -> method -> MR@FPPI=1 of cycles 1, 2
MR = {
    0: {"divergence": [0.5, 0.3], "guided_random": [0.6, 0.5]},
    1: {"divergence": [0.4, 0.2], "guided_random": [0.5, 0.1]},
}


def _config(out: Path) -> ExperimentConfig:
    spec = DataSpec(synth="stills", count=1)
    return ExperimentConfig(
        name="fake", out=out, initial=spec, pool=spec, test=spec, seeds=(0, 1),
        methods=("divergence", "guided_random"), cycles=2, budget=3, control=1,
    )  # fmt: skip


def _fake_runs(out: Path) -> None:
    curve = evaluate([(np.array([[0, 0, 10, 20]]), np.array([0.9]))],
                     [(np.array([[0, 0, 10, 20]]), np.array([False]))])  # fmt: skip
    for seed, methods in MR.items():
        w0 = out / f"seed{seed}" / "w0"
        w0.mkdir(parents=True)
        (w0 / "done.json").write_text(json.dumps({"lamr": 0.9, "mr_at_fppi1": 0.8}))
        curve.to_json(w0 / "eval.json")
        for method, values in methods.items():
            cycles = []
            for c, mr in enumerate(values, start=1):
                curve.to_json(out / f"seed{seed}" / method / f"cycle{c:02d}" / "eval.json")
                cycles.append({
                    "cycle": c, "mr_at_fppi1": mr, "lamr": mr + 0.1, "instances": 10 * c + seed,
                    "control_instances": 1, "pick_errors": 2.0, "control_errors": 1.0,
                    "spearman_z_errors": 0.5 if method == "divergence" else float("nan"),
                    "scoring_seconds": 2.0 if method == "divergence" else 0.0,
                    "scored_frames": 100 if method == "divergence" else 0,
                    "picks": [], "control": [],
                })  # fmt: skip
            state = {"digest": "x", "seed": seed, "method": method, "cycles": cycles}
            (out / f"seed{seed}" / method / "state.json").write_text(json.dumps(state))


def test_mean_spread_uses_the_sample_deviation_and_skips_nan() -> None:
    mean, spread, n = mean_spread([1.0, 3.0, float("nan")])
    assert (mean, n) == (2.0, 2) and abs(spread - np.sqrt(2.0)) < 1e-12
    assert mean_spread([5.0]) == (5.0, 0.0, 1)
    assert mean_spread([])[2] == 0


def test_collect_reads_cycles_and_cumulates_instances(tmp_path: Path) -> None:
    _fake_runs(tmp_path)
    runs = collect(tmp_path, _config(tmp_path))
    div = runs["divergence"]
    assert div.cycles == [0, 1, 2]
    assert div.series("mr_at_fppi1", 0) == {0: 0.8, 1: 0.8}
    assert div.series("mr_at_fppi1", 2) == {0: 0.3, 1: 0.2}
    assert div.cumulative_instances(2) == {0: 30.0, 1: 32.0}
    del div.values["instances"][2][1]  # seed 1 stopped after cycle 1
    assert div.cumulative_instances(2) == {0: 30.0}


def test_summary_tables_and_figures(tmp_path: Path) -> None:
    _fake_runs(tmp_path)
    path = write_outputs(tmp_path, _config(tmp_path))
    text = path.read_text()
    # cycle 2, MR@FPPI=1 in %: divergence 25.00 ± 7.07, guided random 30.00 ± 28.28
    assert "| 2 | 25.00 ± 7.07 | 30.00 ± 28.28 |" in text
    # paired differences: cycle 1 both -10 points, 2/2 wins; cycle 2 -20 and +10, 1/2
    assert "| 1 | -10.00 ± 0.00 (2/2) |" in text
    assert "| 2 | -5.00 ± 21.21 (1/2) |" in text
    # cumulative instances at cycle 2: 30 and 32
    assert "| 2 | 31.0 ± 1.4 | 31.0 ± 1.4 |" in text
    assert "| divergence | 2.00 ± 0.00 | 1.00 ± 0.00 | 0.50 ± 0.00 | 20.0 |" in text
    figures = tmp_path / "figures"
    for name in ("fig5_mr_fppi_divergence", "fig5_mr_fppi_guided_random",
                 "fig5_mr_at_fppi1", "fig7_instances"):  # fmt: skip
        assert (figures / f"{name}.png").stat().st_size > 1000
    assert not (figures / "fig10_ablations.png").exists()  # no ablation ran
    raw = json.loads((tmp_path / "summary.json").read_text())
    assert raw["guided_random"]["mr_at_fppi1"]["1"] == {"0": 0.6, "1": 0.5}
