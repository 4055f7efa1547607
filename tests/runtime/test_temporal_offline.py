"""Per-cycle selection (SPEC §2a): top-b, greedy video selection, random and guided random."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alscout.runtime.temporal import (
    select_guided_random,
    select_random,
    select_top,
    select_video,
    smooth,
)


def greedy_reference(zhat, budget, dt1, dt2, earlier, labeled):
    """The rule as written: repeatedly take the best frame that no rule excludes."""
    picks: list[int] = []
    candidates = set(range(len(zhat)))
    while len(picks) < budget:
        allowed = [
            t
            for t in sorted(candidates)
            if t not in labeled
            and all(abs(t - p) > dt1 for p in picks)
            and all(abs(t - e) > dt2 for e in earlier)
        ]
        if not allowed:
            break
        best = max(allowed, key=lambda t: (zhat[t], -t))
        picks.append(best)
        candidates.discard(best)
    return picks


def spikes(n: int, heights: dict[int, float]) -> np.ndarray:
    z = np.zeros(n)
    for frame, height in heights.items():
        z[frame] = height
    return z


def test_select_top_known_order_and_ties() -> None:
    z = np.array([0.1, 0.9, 0.5, 0.9, 0.2, 0.5])
    assert select_top(z, 4) == [1, 3, 2, 5]
    assert select_top(z, 4, labeled=[3, 2]) == [1, 5, 4, 0]
    assert select_top(z, 0) == []
    assert select_top(z, 100, labeled=range(6)) == []


def test_select_video_picks_the_spikes_and_skips_within_dt1() -> None:
    z = spikes(600, {100: 5.0, 300: 4.0, 110: 3.0, 500: 2.0})
    # 110 is within dt1 = 15 of 100, so it goes; 500 is next.
    assert select_video(z, 3) == [100, 300, 500]
    assert select_video(z, 3, dt1=5) == [100, 300, 110]
    assert select_video(z, 0) == []


def test_labeled_skips_only_the_frame_itself_with_ties_to_the_lower_index() -> None:
    z = spikes(600, {100: 5.0, 300: 1.0})
    # 99 and 101 get the same smoothed score from the spike; the lower index wins.
    assert select_video(z, 1, labeled=[100]) == [99]


def test_earlier_blocks_dt2_around_each_earlier_pick() -> None:
    z = spikes(600, {100: 5.0, 300: 4.0})
    picks = select_video(z, 2, earlier=[100])
    # 98..102 are blocked; 97 and 103 carry the spike's tail; 97 is the lower index.
    zhat = smooth(z)
    assert picks == [300, 97]
    assert zhat[97] == zhat[103] > zhat[96]
    assert select_video(z, 1, earlier=[100], dt2=10) == [300]


def test_select_video_smooths_before_ranking() -> None:
    # A lone spike loses to a broad bump of lower height once smoothed.
    z = np.zeros(200)
    z[20] = 1.0
    z[100:111] = 0.6
    assert select_top(z, 1) == [20]
    assert select_video(z, 1) == [105]
    assert select_video(z, 1, dt=0) == [20]


@settings(max_examples=120, deadline=None)
@given(
    z=st.lists(st.integers(0, 4), min_size=0, max_size=120),
    budget=st.integers(0, 12),
    dt1=st.integers(0, 20),
    dt2=st.integers(0, 5),
    data=st.data(),
)
def test_select_video_equals_the_rule_as_written(z, budget, dt1, dt2, data) -> None:
    n = len(z)
    frames = st.lists(st.integers(0, max(n - 1, 0)), max_size=6) if n else st.just([])
    earlier = data.draw(frames)
    labeled = data.draw(frames)
    scores = np.array(z, dtype=np.float64)
    picks = select_video(scores, budget, dt1=dt1, dt2=dt2, earlier=earlier, labeled=labeled)
    zhat = smooth(scores)
    assert picks == greedy_reference(zhat, budget, dt1, dt2, set(earlier), set(labeled))


def test_select_random_is_seeded_and_skips_labeled() -> None:
    a = select_random(100, 30, np.random.default_rng(7), labeled=range(50))
    b = select_random(100, 30, np.random.default_rng(7), labeled=range(50))
    assert a == b
    assert len(set(a)) == 30 and min(a) >= 50
    assert select_random(10, 50, np.random.default_rng(0)) != list(range(10))
    assert sorted(select_random(10, 50, np.random.default_rng(0))) == list(range(10))
    counts = np.bincount(
        np.concatenate([select_random(10, 1, np.random.default_rng(s)) for s in range(2000)]),
        minlength=10,
    )
    assert counts.min() > 140 and counts.max() < 260  # uniform: 200 each


def test_guided_random_obeys_the_exclusion_rules_and_is_maximal() -> None:
    rng = np.random.default_rng(3)
    earlier, labeled = [10, 200], [50, 51, 400]
    picks = select_guided_random(500, 1000, rng, dt1=15, dt2=2, earlier=earlier, labeled=labeled)
    assert not set(picks) & set(labeled)
    assert all(abs(a - b) > 15 for i, a in enumerate(picks) for b in picks[:i])
    assert all(abs(p - e) > 2 for p in picks for e in earlier)
    # Ran out of frames before the budget: every frame left is excluded by some rule.
    for t in set(range(500)) - set(picks):
        assert (
            t in labeled
            or any(abs(t - p) <= 15 for p in picks)
            or any(abs(t - e) <= 2 for e in earlier)
        )
    again = select_guided_random(
        np.zeros(500), 1000, np.random.default_rng(3), earlier=earlier, labeled=labeled
    )
    assert again == picks
    assert picks != sorted(picks)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: select_video(np.zeros(10), -1), "budget must be >= 0"),
        (lambda: select_video(np.zeros(10), 1.5), "budget must be an integer"),
        (lambda: select_video(np.zeros(10), 1, dt=-1), "dt must be >= 0"),
        (lambda: select_video(np.zeros(10), 1, sigma=0), "sigma"),
        (lambda: select_video(np.zeros(10), 1, dt1=-1), "dt1 must be >= 0"),
        (lambda: select_video(np.zeros(10), 1, dt2=-3), "dt2 must be >= 0"),
        (lambda: select_video(np.array([1.0, np.nan]), 1), "finite"),
        (lambda: select_video(np.zeros((2, 2)), 1), "1-D"),
        (lambda: select_video(np.zeros(10), 1, labeled=[10]), "labeled holds frame 10, outside"),
        (lambda: select_video(np.zeros(10), 1, earlier=[-1]), "earlier holds the negative"),
        (lambda: select_video(np.zeros(10), 1, earlier=[1.5]), "integer frame indices"),
        (lambda: select_top(np.zeros(3), -2), "budget must be >= 0"),
        (lambda: select_random(10, 2, np.random), "numpy.random.Generator"),
        (lambda: select_random(-1, 2, np.random.default_rng()), "n_frames must be >= 0"),
        (lambda: select_guided_random(10, -1, np.random.default_rng()), "budget"),
    ],
)
def test_bad_input_raises_value_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
