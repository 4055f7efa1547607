"""Selection methods of the experiments: orders known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from alscout.errors import InvalidInputError
from alscout.trainer.al.methods import METHODS, TemporalRules, choose

NO_SMOOTH = TemporalRules(dt=0, sigma=1.0, dt1=3, dt2=1)


def _one(n: int) -> list[np.ndarray]:
    return [np.arange(n)]


def test_divergence_picks_by_score_and_keeps_dt1_apart() -> None:
    z = np.zeros(40)
    z[[10, 11, 12, 30]] = [5.0, 4.0, 3.0, 2.0]
    picks = choose(METHODS["divergence_no_smoothing"], 3, _one(40), np.random.default_rng(0),
                   z, NO_SMOOTH)  # fmt: skip
    # 11 and 12 are within dt1 = 3 of 10; the third pick is the first zero not excluded
    assert picks == [10, 30, 0]


def test_no_rules_picks_neighbours() -> None:
    z = np.zeros(40)
    z[[10, 11, 12, 30]] = [5.0, 4.0, 3.0, 2.0]
    picks = choose(METHODS["divergence_no_rules"], 3, _one(40), np.random.default_rng(0),
                   z, NO_SMOOTH)  # fmt: skip
    assert picks == [10, 11, 12]


def test_smoothing_prefers_a_broad_hump_over_a_spike() -> None:
    z = np.zeros(60)
    z[10] = 3.0  # a one-frame spike
    z[38:43] = 2.0  # a hump five frames wide
    rules = TemporalRules(dt=5, sigma=2.5, dt1=15, dt2=2)
    rng = np.random.default_rng(0)
    assert choose(METHODS["divergence"], 1, _one(60), rng, z, rules) == [40]
    assert choose(METHODS["divergence_no_smoothing"], 1, _one(60), rng, z, rules) == [10]


def test_labeled_and_earlier_frames_are_respected() -> None:
    z = np.arange(20, dtype=np.float64)
    rules = TemporalRules(dt=0, sigma=1.0, dt1=0, dt2=2)
    picks = choose(METHODS["divergence"], 2, _one(20), np.random.default_rng(0), z, rules,
                   earlier=[19], labeled=[19])  # fmt: skip
    assert picks == [16, 15]  # 17 and 18 lie within dt2 of the earlier pick 19


def test_exclusion_does_not_reach_across_recordings() -> None:
    z = np.zeros(20)
    z[9], z[10] = 5.0, 4.0  # last frame of recording 1, first of recording 2
    seqs = [np.arange(10), np.arange(10, 20)]
    rules = TemporalRules(dt=0, sigma=1.0, dt1=5, dt2=2)
    picks = choose(METHODS["entropy"], 2, seqs, np.random.default_rng(0), z, rules)
    assert picks == [9, 10]
    assert choose(METHODS["entropy"], 2, [np.arange(20)], np.random.default_rng(0), z,
                  rules) != [9, 10]  # fmt: skip


def test_stills_take_the_top_scores() -> None:
    z = np.array([0.1, 0.9, 0.5, 0.9, 0.2])
    picks = choose(METHODS["divergence"], 3, _one(5), np.random.default_rng(0), z,
                   labeled=[3], video=False)  # fmt: skip
    assert picks == [1, 2, 4]


def test_guided_random_keeps_rules_and_is_seeded() -> None:
    rules = TemporalRules(dt1=10, dt2=2)
    a = choose(METHODS["guided_random"], 5, _one(200), np.random.default_rng(7), rules=rules)
    b = choose(METHODS["guided_random"], 5, _one(200), np.random.default_rng(7), rules=rules)
    c = choose(METHODS["guided_random"], 5, _one(200), np.random.default_rng(8), rules=rules)
    assert a == b and a != c and len(a) == 5
    gaps = np.diff(np.sort(a))
    assert (gaps > 10).all()


def test_random_ignores_rules_and_labeled() -> None:
    picks = choose(METHODS["random"], 30, _one(40), np.random.default_rng(1), labeled=range(10))
    assert len(set(picks)) == 30 and min(picks) >= 10


def test_scored_method_needs_scores() -> None:
    with pytest.raises(InvalidInputError, match="needs scores"):
        choose(METHODS["divergence"], 2, _one(10), np.random.default_rng(0), None)


def test_gated_frames_are_never_picked_and_block_no_neighbour() -> None:
    z = np.zeros(40)
    z[[10, 11, 30]] = [5.0, 4.0, 2.0]
    picks = choose(METHODS["divergence_no_smoothing"], 2, _one(40), np.random.default_rng(0),
                   z, NO_SMOOTH, gated=[10])  # fmt: skip
    assert picks == [11, 30]  # 10 is held back, and does not exclude 11
    stills = choose(METHODS["entropy"], 2, _one(40), np.random.default_rng(0), z,
                    video=False, gated=[10, 30])  # fmt: skip
    assert stills == [11, 0]


@pytest.mark.parametrize(
    "name", ["least_confidence", "instance_count", "divergence_count", "difficulty"]
)
def test_new_acquisition_methods_are_scored_video_methods(name) -> None:
    from alscout.runtime.acquisition import ACQUISITIONS

    method = METHODS[name]
    assert method.scored and method.score in ACQUISITIONS and method.rules and method.smoothing


def test_a_method_must_name_a_registered_score() -> None:
    from alscout.errors import ConfigError
    from alscout.trainer.al.methods import Method

    with pytest.raises(ConfigError, match="least_confidence"):
        Method("margin", score="margin")
