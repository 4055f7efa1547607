"""The adaptive threshold (SPEC §2b): the streaming estimator and the flag rate it holds."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alscout.runtime.temporal import (
    AdaptiveThreshold,
    OnlineSelector,
    SelectorConfig,
    flag_recording,
    smooth,
)


def kth_largest_candidate(window: list[float | None], rate: float) -> float:
    """The threshold by its definition, recomputed from scratch."""
    if not window:
        return -math.inf
    k = max(1, math.floor(rate * len(window) + 0.5))
    candidates = sorted((s for s in window if s is not None), reverse=True)
    return candidates[k - 1] if k <= len(candidates) else -math.inf


@settings(max_examples=200, deadline=None)
@given(
    observations=st.lists(st.one_of(st.none(), st.integers(0, 5).map(float)), max_size=200),
    history=st.integers(1, 40),
    rate=st.sampled_from([0.01, 0.05, 0.2, 0.5, 1.0]),
)
def test_estimator_equals_its_definition(observations, history, rate) -> None:
    estimator = AdaptiveThreshold(rate, history)
    assert estimator.value() == -math.inf
    for i, score in enumerate(observations):
        estimator.observe(score)
        window = observations[max(0, i + 1 - history) : i + 1]
        assert estimator.n_frames == len(window)
        assert estimator.n_candidates == sum(s is not None for s in window)
        assert estimator.value() == kth_largest_candidate(window, rate)


def test_rank_rounds_halves_up_and_is_at_least_one() -> None:
    estimator = AdaptiveThreshold(0.01, 1000)
    for n in range(1, 451):
        estimator.observe(None)
        assert estimator.rank() == max(1, math.floor(0.01 * n + 0.5))
    assert estimator.rank() == 5  # 4.5 rounds up
    assert estimator.value() == -math.inf  # no candidates: every candidate would pass


def reference_adaptive(z, dt1, rate, history, min_history):
    """Flags under the adaptive threshold, with every threshold recomputed from scratch."""
    zhat = smooth(np.asarray(z, dtype=np.float64)).tolist()
    n = len(zhat)
    flags, window = [], []
    for t in range(n):
        lo, hi = max(0, t - dt1), min(n, t + dt1 + 1)
        local = all(zhat[s] < zhat[t] for s in range(lo, t)) and all(
            zhat[s] <= zhat[t] for s in range(t + 1, hi)
        )
        if t >= min_history and local and zhat[t] >= kth_largest_candidate(window, rate):
            flags.append(t)
        window = [*window, zhat[t] if local else None][-history:]
    return flags


@settings(max_examples=80, deadline=None)
@given(
    z=st.lists(st.integers(0, 6).map(float), max_size=250),
    dt1=st.integers(0, 8),
    rate=st.sampled_from([0.02, 0.1, 0.3]),
    history=st.integers(1, 60),
    data=st.data(),
)
def test_adaptive_selector_equals_the_rule(z, dt1, rate, history, data) -> None:
    min_history = data.draw(st.integers(0, history))
    config = SelectorConfig(
        dt1=dt1, threshold="adaptive", target_rate=rate, history=history, min_history=min_history
    )
    decisions = flag_recording(z, config)
    flagged = [d.frame for d in decisions if d.flagged]
    assert flagged == reference_adaptive(z, dt1, rate, history, min_history)
    warming = [d.frame for d in decisions if d.reason == "warming_up"]
    assert warming == list(range(min(min_history, len(z))))
    assert all(math.isnan(d.threshold) for d in decisions[:min_history])
    assert not any(math.isnan(d.threshold) for d in decisions[min_history:])


def ar1_scores(n: int, phi: float, seed: int) -> np.ndarray:
    """A stationary AR(1) stream ``z_t = phi z_{t-1} + e_t``, shifted to be positive."""
    noise = np.random.default_rng(seed).normal(size=n)
    z = np.empty(n)
    z[0] = noise[0] / math.sqrt(1 - phi * phi)
    for t in range(1, n):
        z[t] = phi * z[t - 1] + noise[t]
    return 0.1 * z + 1.0


@pytest.mark.parametrize(("phi", "seed"), [(0.9, 11), (0.5, 12)])
def test_adaptive_threshold_holds_one_percent_on_a_stationary_stream(phi: float, seed: int) -> None:
    n, warm = 100_000, 900
    z = ar1_scores(n, phi, seed)
    selector = OnlineSelector(
        threshold="adaptive", target_rate=0.01, history=9000, min_history=warm
    )
    start = time.perf_counter()
    decisions = selector.push_many(np.arange(n), z) + selector.finish()
    elapsed = time.perf_counter() - start
    rate = sum(d.flagged for d in decisions) / (n - warm)
    assert 0.008 <= rate <= 0.012, f"flag rate {rate:.4%} for a 1% target"
    assert n / elapsed > 5_000, f"{n / elapsed:.0f} frames/s"
    # A plain 99th percentile of every frame's zhat flags far fewer than the 1% asked.
    plain = np.quantile(smooth(z), 0.99)
    plain_rate = sum(d.smoothed >= plain and d.reason != "not_local_max" for d in decisions) / n
    assert plain_rate < 0.5 * 0.01


def test_adaptive_threshold_follows_a_change_of_score_scale() -> None:
    # A newer model scores on another scale: the rate comes back within one history.
    z = np.concatenate([ar1_scores(30_000, 0.5, 1), 50.0 * ar1_scores(30_000, 0.5, 2)])
    config = SelectorConfig(threshold="adaptive", history=3000, min_history=300)
    decisions = flag_recording(z, config)
    late = decisions[40_000:]
    rate = sum(d.flagged for d in late) / len(late)
    assert 0.008 <= rate <= 0.012
    assert late[-1].threshold > 10 * decisions[29_000].threshold
