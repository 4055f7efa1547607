"""The shipped benchmark configurations of issue #15: their shape, not their numbers."""

from __future__ import annotations

from pathlib import Path

from alscout.trainer.al.config import load_experiment

REPO = Path(__file__).resolve().parents[2]
BASELINES = {"random", "guided_random", "entropy", "least_confidence", "mc_dropout"}


def test_the_full_benchmark_has_the_issues_shape() -> None:
    full = load_experiment(REPO / "configs/al/pets_benchmark.toml")
    assert len(full.seeds) >= 5 and full.cycles >= 4
    assert full.methods[0] == "divergence"  # the reference of the paired differences
    assert BASELINES | {"divergence", "divergence_count"} <= set(full.methods)
    assert full.pool.images is not None and full.pool.images.name == "vtest.avi"
    assert full.pool.frames is not None and full.test.frames is not None
    assert full.pool.frames[1] < full.test.frames[0]  # the test part is held out


def test_the_small_benchmark_has_the_same_methods_and_is_smaller() -> None:
    full = load_experiment(REPO / "configs/al/pets_benchmark.toml")
    small = load_experiment(REPO / "configs/al/pets_benchmark_small.toml")
    assert small.methods == full.methods and small.test == full.test
    assert len(small.seeds) >= 2  # a paired interval needs two seeds
    assert small.cycles < full.cycles and small.train.epochs < full.train.epochs
    assert small.train.input_size[0] * small.train.input_size[1] < 360 * 480
    assert small.pool.frames is not None and small.pool.frames[1] < full.test.frames[0]
