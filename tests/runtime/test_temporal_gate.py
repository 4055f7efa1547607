"""The streaming rule with the quality gate (reason low_quality) and a shipped threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alscout.errors import ConfigError
from alscout.runtime.temporal import OnlineSelector, Reason, SelectorConfig, flag_recording, smooth


def reference_flags(z: np.ndarray, gated: np.ndarray, threshold: float, dt1: int) -> list[int]:
    """The rule written out on the whole recording: smooth every score; a frame that is
    not gated is flagged when its smoothed score reaches the threshold and beats every
    earlier non-gated frame within dt1 and ties or beats every later one."""
    zhat = smooth(z)
    flags = []
    for t in range(len(z)):
        if gated[t] or zhat[t] < threshold:
            continue
        window = range(max(0, t - dt1), min(len(z), t + dt1 + 1))
        earlier = [s for s in window if s < t and not gated[s]]
        later = [s for s in window if s > t and not gated[s]]
        if all(zhat[s] < zhat[t] for s in earlier) and all(zhat[s] <= zhat[t] for s in later):
            flags.append(t)
    return flags


def test_a_gated_peak_is_not_flagged_and_does_not_block_its_neighbours():
    z = np.zeros(60)
    z[28:33] = [2.0, 6.0, 10.0, 6.0, 2.0]  # one peak, spread over a few frames
    config = SelectorConfig(threshold=0.5)
    plain = flag_recording(z, config)
    assert [d.frame for d in plain if d.flagged] == [30]
    gated = np.zeros(60, bool)
    gated[30] = True  # the best frame is blurred
    decisions = flag_recording(z, config, gated=gated)
    assert decisions[30].reason is Reason.LOW_QUALITY and not decisions[30].flagged
    # the next best frame of the same peak (ties: the earlier) is flagged instead
    assert [d.frame for d in decisions if d.flagged] == [29]
    # the gate changes no score
    assert [d.smoothed for d in decisions] == [d.smoothed for d in plain]


@pytest.mark.parametrize("seed", range(5))
def test_gated_streams_follow_the_rule_written_out(seed):
    rng = np.random.default_rng(seed)
    z = np.cumsum(rng.normal(size=400)) * 0.1 + rng.normal(size=400)
    gated = rng.random(400) < 0.2
    gated[100:130] = True  # a long blurred stretch
    threshold = float(np.quantile(z, 0.6))
    decisions = flag_recording(z, SelectorConfig(threshold=threshold), gated=gated)
    flagged = [d.frame for d in decisions if d.flagged]
    assert flagged == reference_flags(z, gated, threshold, dt1=15)
    assert flagged and not any(gated[f] for f in flagged)
    assert [d.frame for d in decisions if d.reason is Reason.LOW_QUALITY] == list(
        np.flatnonzero(gated)
    )


def test_no_gate_gives_the_decisions_of_before():
    z = np.random.default_rng(9).normal(size=300)
    config = SelectorConfig(threshold="adaptive", min_history=50, history=200, target_rate=0.05)
    assert flag_recording(z, config, gated=np.zeros(300, bool)) == flag_recording(z, config)


def test_streaming_and_whole_recording_agree_with_the_gate():
    rng = np.random.default_rng(4)
    z = rng.normal(size=200)
    gated = rng.random(200) < 0.3
    selector = OnlineSelector(threshold=0.2)
    streamed = []
    for t in range(200):
        streamed.extend(selector.push(t, float(z[t]), bool(gated[t])))
    streamed.extend(selector.finish())
    assert streamed == flag_recording(z, SelectorConfig(threshold=0.2), gated=gated)


def test_gated_frames_are_no_candidates_of_the_adaptive_threshold():
    period = np.zeros(80)
    period[2], period[42] = 9.0, 5.0  # a high peak and a lower one per 80 frames
    z = np.tile(period, 15)
    gated = np.zeros(len(z), bool)
    for start in range(0, len(z), 80):
        gated[start : start + 10] = True  # the high peaks are blurred, with their spread
    config = SelectorConfig(threshold="adaptive", target_rate=0.01, history=400, min_history=80)
    flagged = [d.frame for d in flag_recording(z, config, gated=gated) if d.flagged]
    # were the blurred peaks candidates, the 4 largest would be theirs and the lower
    # peaks would stay below the threshold
    assert len(flagged) >= 10 and all(f % 80 == 42 for f in flagged)
    ungated = [d.frame for d in flag_recording(z, config) if d.flagged]
    assert ungated and all(f % 80 == 2 for f in ungated)


# ------------------------------------------------------------------ shipped threshold


def test_a_shipped_threshold_flags_from_the_first_frames_then_adapts():
    rng = np.random.default_rng(1)
    z = rng.normal(size=3000)
    config = SelectorConfig(
        threshold="adaptive", target_rate=0.01, history=2000, min_history=900, initial_threshold=0.4
    )
    decisions = flag_recording(z, config)
    assert all(d.reason is not Reason.WARMING_UP for d in decisions)
    assert all(d.threshold == 0.4 for d in decisions[:900])
    assert {d.threshold for d in decisions[900:]} != {0.4}  # the stream's own quantile now
    assert any(d.flagged for d in decisions[:300])
    without = flag_recording(
        z, SelectorConfig(threshold="adaptive", target_rate=0.01, history=2000, min_history=900)
    )
    assert not any(d.flagged for d in without[:900])
    assert all(math.isnan(d.threshold) for d in without[:900])
    # after the warm-up both run the same adaptive rule on the same window
    assert [d.threshold for d in decisions[900:]] == [d.threshold for d in without[900:]]


def test_initial_threshold_is_checked():
    with pytest.raises(ConfigError, match="adaptive"):
        SelectorConfig(threshold=0.5, initial_threshold=1.0)
    with pytest.raises(ConfigError, match="finite"):
        SelectorConfig(threshold="adaptive", initial_threshold=math.inf)
    with pytest.raises(ConfigError, match="number"):
        SelectorConfig(threshold="adaptive", initial_threshold="1")  # type: ignore[arg-type]
    assert SelectorConfig(threshold="adaptive", initial_threshold=2).initial_threshold == 2.0
