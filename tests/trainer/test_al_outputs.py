"""The summary and figures of an experiment, from run folders with known numbers."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from alscout.errors import ConfigError
from alscout.trainer.al.config import DataSpec, ExperimentConfig
from alscout.trainer.al.outputs import collect, mean_spread, write_outputs
from alscout.trainer.al.stats import paired_difference, pool_rank_checks, rank_rng
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


def _pool_frames(seed: int) -> dict:
    """A 30-frame pool, frames 0-2 labeled; z tracks the errors loosely."""
    rng = np.random.default_rng(seed)
    positions = list(range(3, 30))
    errors = rng.integers(0, 4, size=27)
    fp = np.minimum(errors, 1)
    return {
        "pool_size": 30, "error_threshold": 0.5, "positions": positions,
        "z": (errors + rng.normal(size=27)).tolist(), "false_positives": fp.tolist(),
        "false_negatives": (errors - fp).tolist(), "ground_truth": rng.integers(0, 4, 27).tolist(),
    }  # fmt: skip


def _benchmark_fields(out: Path) -> None:
    """What the benchmark's driver adds: instances per frame, both rank checks and the
    pool frames; seed 1 of divergence keeps no pool frames in cycle 2 (an older run)."""
    for seed in MR:
        for method in ("divergence", "guided_random"):
            path = out / f"seed{seed}" / method / "state.json"
            state = json.loads(path.read_text())
            for cycle in state["cycles"]:
                c = cycle["cycle"]
                if method == "guided_random":
                    cycle["picks"] = [1, 2, 3]  # no instances_per_frame: instances / picks
                    continue
                cycle["instances_per_frame"] = 2.0 + seed
                if c == 2 and seed == 1:
                    continue
                frames = _pool_frames(10 * seed + c)
                cycle_dir = path.parent / f"cycle{c:02d}"
                (cycle_dir / "pool_frames.json").write_text(json.dumps(frames))
                check = pool_rank_checks([frames], partial(rank_rng, c, "divergence"))
                for name, key in (("errors", "spearman_z_errors"),
                                  ("error_rate", "spearman_z_error_rate")):  # fmt: skip
                    cycle[key] = check[name].rho
                    cycle[f"{key}_low"], cycle[f"{key}_high"] = check[name].low, check[name].high
            path.write_text(json.dumps(state))


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
    # paired differences: cycle 1 both -10 points, 2/2 wins, a zero-width interval (bold);
    # cycle 2 -20 and +10, 1/2: t_{0.95, 1} * sd / sqrt(2) = 6.3138 * 15 = 94.71
    assert "## divergence minus each other method, MR@FPPI=1" in text
    assert "| 1 | **-10.00 [-10.00, -10.00] (2/2)** |" in text
    assert "| 2 | -5.00 [-99.71, +89.71] (1/2) |" in text
    assert text.count("[-99.71, +89.71]") == 2  # LAMR = MR + 0.1: the same differences
    # each seed's mean over cycles 1-2: divergence 0.40 / 0.30, guided 0.55 / 0.30
    over = paired_difference([0.4, 0.3], [0.55, 0.3])
    assert over.wins == 1 and over.mean == pytest.approx(-0.075)
    ci = f"{100 * over.low:+.2f}, {100 * over.high:+.2f}"
    row = f"| mean of 1-2 | {100 * over.mean:+.2f} [{ci}] (1/2) |"
    assert text.count(row) == 2
    bench = json.loads((tmp_path / "summary.json").read_text())["benchmark"]
    assert bench["paired_over_cycles"]["lamr"]["guided_random"]["mean"] == pytest.approx(-0.075)
    # cumulative instances at cycle 2: 30 and 32
    assert "| 2 | 31.0 ± 1.4 | 31.0 ± 1.4 |" in text
    assert "| divergence | 2.00 ± 0.00 | 1.00 ± 0.00 | 0.50 ± 0.00 | 20.0 |" in text
    figures = tmp_path / "figures"
    for name in ("fig5_mr_fppi_divergence", "fig5_mr_fppi_guided_random",
                 "fig5_mr_at_fppi1", "fig7_instances"):  # fmt: skip
        assert (figures / f"{name}.png").stat().st_size > 1000
    assert not (figures / "fig10_ablations.png").exists()  # no ablation ran
    assert (figures / "paired_mr_at_fppi1.png").stat().st_size > 1000
    raw = json.loads((tmp_path / "summary.json").read_text())
    assert raw["guided_random"]["mr_at_fppi1"]["1"] == {"0": 0.6, "1": 0.5}
    bench = raw["benchmark"]
    assert bench["reference"] == "divergence" and bench["level"] == 0.9
    assert bench["paired"]["mr_at_fppi1"]["1"]["guided_random"]["n"] == 2
    assert bench["mean"]["mr_at_fppi1"]["divergence"]["2"]["mean"] == pytest.approx(0.25)


def test_an_older_run_folder_shows_what_it_lacks_as_a_dash(tmp_path: Path) -> None:
    _fake_runs(tmp_path)
    text = write_outputs(tmp_path, _config(tmp_path)).read_text()
    # no instances per frame (no picks kept), no error-rate check, no pool frames
    assert "## Pedestrian instances per labeled frame" in text
    assert "| 1 | - | - |" in text
    assert "| 1 | 0.50 ± 0.00 (no CI) |" in text  # z vs FP + FN, from the state alone
    assert "| 2 | - |" in text  # z vs the error rate: never recorded
    raw = json.loads((tmp_path / "summary.json").read_text())
    assert raw["benchmark"]["rank_checks"]["errors"]["divergence"]["1"] is None
    assert raw["benchmark"]["paired"]["lamr"]["1"]["guided_random"]["low"] == pytest.approx(-0.1)


def test_benchmark_tables_paired_differences_and_rank_checks(tmp_path: Path) -> None:
    _fake_runs(tmp_path)
    _benchmark_fields(tmp_path)
    path = write_outputs(tmp_path, _config(tmp_path))
    text = path.read_text()
    # instances per labeled frame: divergence 2 and 3; guided random (10 + s) / 3 picks
    assert "| 1 | 2.50 ± 0.71 | 3.50 ± 0.24 |" in text
    # cycle 1: both seeds kept their pool frames -> mean over seeds with a bootstrap CI
    both = [_pool_frames(1), _pool_frames(11)]
    checks = pool_rank_checks(both, lambda: rank_rng(1, "divergence"))
    for name in ("errors", "error_rate"):
        c = checks[name]
        assert f"| 1 | {c.rho:.2f} [{c.low:.2f}, {c.high:.2f}] |" in text
        assert c.runs == 2 and c.block == 5 and not math.isnan(c.low)
    # cycle 2: seed 1 kept none -> the state's per-seed values, no interval
    seed0 = pool_rank_checks([_pool_frames(2)], lambda: rank_rng(2, "divergence"))
    mean, spread, _ = mean_spread([seed0["errors"].rho, 0.5])
    assert f"| 2 | {mean:.2f} ± {spread:.2f} (no CI) |" in text
    assert f"| 2 | {seed0['error_rate'].rho:.2f} (no CI) |" in text  # seed 0 alone has it
    raw = json.loads((tmp_path / "summary.json").read_text())
    got = raw["benchmark"]["rank_checks"]["errors"]["divergence"]
    assert got["1"]["rho"] == pytest.approx(checks["errors"].rho) and got["2"] is None
    assert "guided_random" not in raw["benchmark"]["rank_checks"]["errors"]  # no z
    one = json.loads((tmp_path / "seed0" / "divergence" / "state.json").read_text())
    alone = pool_rank_checks([_pool_frames(1)], lambda: rank_rng(1, "divergence"))["errors"]
    assert one["cycles"][0]["spearman_z_errors_low"] == alone.low


def test_the_reference_method_can_be_chosen(tmp_path: Path) -> None:
    _fake_runs(tmp_path)
    text = write_outputs(tmp_path, _config(tmp_path), reference="guided_random").read_text()
    assert "## guided_random minus each other method, MR@FPPI=1" in text
    d = paired_difference([0.6, 0.5], [0.5, 0.4])
    assert f"| 1 | **+10.00 [{100 * d.low:+.2f}, {100 * d.high:+.2f}] (0/2)** |" in text
    with pytest.raises(ConfigError, match="reference"):
        write_outputs(tmp_path, _config(tmp_path), reference="entropy")
