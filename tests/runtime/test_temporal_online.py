"""The streaming selector (SPEC §2b) against the rule written out frame by frame."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alscout.runtime.temporal import (
    Decision,
    OnlineSelector,
    Reason,
    SelectorConfig,
    flag_recording,
    smooth,
)


def reference_flags(frames, z, dt, sigma, dt1, dt2, threshold, earlier, max_flags, per_frames):
    """Frame indices flagged by §2b, checked directly on the whole recording."""
    zhat = smooth(np.array(z, dtype=np.float64), dt, sigma, frames=np.array(frames, dtype=np.int64))
    flags: list[int] = []
    for i, t in enumerate(frames):
        window = [j for j, s in enumerate(frames) if abs(s - t) <= dt1 and j != i]
        local_max = all(zhat[j] < zhat[i] if frames[j] < t else zhat[j] <= zhat[i] for j in window)
        near = any(abs(t - e) <= dt2 for e in earlier)
        budget = max_flags is None or sum(t - per_frames < f < t for f in flags) < max_flags
        if zhat[i] >= threshold and local_max and not near and budget:
            flags.append(t)
    return flags, zhat


streams = st.integers(0, 160).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(1, 4), min_size=n, max_size=n),  # gaps between frame indices
        st.lists(st.integers(0, 3), min_size=n, max_size=n),  # few levels: many ties
    )
)
params = st.fixed_dictionaries(
    {
        "dt": st.integers(0, 6),
        "sigma": st.sampled_from([0.5, 2.5, 4.0]),
        "dt1": st.integers(0, 20),
        "dt2": st.integers(0, 4),
        "threshold": st.sampled_from([-math.inf, 0.5, 1.5]),
    }
)


@settings(max_examples=150, deadline=None)
@given(stream=streams, p=params, budget=st.sampled_from([None, (1, 40), (2, 60)]), data=st.data())
def test_streaming_equals_the_rule_and_the_whole_recording(stream, p, budget, data) -> None:
    gaps, levels = stream
    frames = (np.cumsum(gaps) - 1).tolist()
    z = [level + 0.01 * (i % 3) for i, level in enumerate(levels)]
    top = frames[-1] + 5 if frames else 5
    earlier = data.draw(st.lists(st.integers(0, top), max_size=4))
    max_flags, per_frames = budget or (None, None)
    settings_ = dict(p, earlier=earlier, max_flags=max_flags, per_frames=per_frames)

    selector = OnlineSelector(**settings_)
    arrived: list[tuple[int | None, Decision]] = []
    for frame, score in zip(frames, z, strict=True):
        arrived += [(frame, d) for d in selector.push(frame, score)]
        assert selector.pending + selector.n_decided == frames.index(frame) + 1
    arrived += [(None, d) for d in selector.finish()]
    decisions = [d for _, d in arrived]

    # Every frame gets exactly one final decision, in frame order.
    assert [d.frame for d in decisions] == frames
    # It arrives with the first frame >= t + dt + dt1, or at finish.
    latency = p["dt"] + p["dt1"]
    for pushed, d in arrived:
        due = next((f for f in frames if f >= d.frame + latency), None)
        assert pushed == due
    # The flags are the rule's, the smoothed scores are smooth()'s, bit for bit.
    want, zhat = reference_flags(frames, z, **settings_)
    assert [d.frame for d in decisions if d.flagged] == want
    assert [d.smoothed for d in decisions] == zhat.tolist()
    assert [d.z for d in decisions] == z
    # Two flags are more than dt1 apart; nothing within dt2 of an earlier upload.
    assert all(b - a > p["dt1"] for a, b in itertools.pairwise(want))
    assert not [t for t in want if any(abs(t - e) <= p["dt2"] for e in earlier)]
    # The whole-recording driver gives the same decisions.
    config = SelectorConfig(**p, max_flags=max_flags, per_frames=per_frames)
    assert flag_recording(z, config, earlier, frames=frames) == decisions


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 300), cuts=st.lists(st.integers(0, 300), max_size=8), seed=st.integers(0, 99)
)
def test_chunked_pushes_equal_frame_by_frame(n: int, cuts: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    frames = np.cumsum(rng.integers(1, 3, size=n))
    z = rng.normal(size=n)
    one_by_one = OnlineSelector(threshold=0.2)
    want = [d for f, s in zip(frames, z, strict=True) for d in one_by_one.push(f, s)]
    want += one_by_one.finish()
    chunked = OnlineSelector(threshold=0.2)
    got: list[Decision] = []
    bounds = [0, *sorted(c for c in cuts if c <= n), n]
    for lo, hi in itertools.pairwise(bounds):
        got += chunked.push_many(frames[lo:hi], z[lo:hi])
    got += chunked.finish()
    assert got == want and len(got) == n


def test_reasons_on_a_constructed_stream() -> None:
    z = np.zeros(200)
    z[50], z[60], z[120], z[180] = 5.0, 4.0, 0.5, 3.0
    decisions = flag_recording(z, SelectorConfig(threshold=0.3), earlier=[182])
    by_frame = {d.frame: d for d in decisions}
    assert [d.frame for d in decisions if d.flagged] == [50]
    assert by_frame[50].reason == Reason.FLAGGED == "flagged"
    assert by_frame[60].reason == "not_local_max"  # 50 is within dt1 and higher
    assert by_frame[120].reason == "below_threshold"  # its peak is 0.5 * w0 / sum(w) < 0.3
    assert by_frame[180].reason == "near_earlier_upload"
    assert by_frame[0].reason == "below_threshold"
    assert all(d.threshold == 0.3 for d in decisions)


def test_tie_goes_to_the_earliest_frame() -> None:
    z = np.zeros(60)
    z[20:23] = 1.0  # a plateau: zhat[20] == zhat[22] by symmetry, zhat[21] is the peak
    z[40] = z[45] = 1.0  # equal peaks 5 apart: the earlier one wins
    decisions = flag_recording(z, SelectorConfig(dt=0, dt1=6, threshold=0.5))
    flagged = [d.frame for d in decisions if d.flagged]
    assert flagged == [20, 40]


def test_budget_rule_refuses_without_deferring() -> None:
    # dt = dt1 = 0: every frame is its own local maximum, so only the budget decides.
    z = np.arange(1.0, 31.0)
    config = SelectorConfig(dt=0, dt1=0, threshold=-math.inf, max_flags=2, per_frames=5)
    decisions = flag_recording(z, config)
    flagged = [d.frame for d in decisions if d.flagged]
    assert flagged == [t for t in range(30) if t % 5 in (0, 1)]
    assert {d.reason for d in decisions if not d.flagged} == {Reason.BUDGET}
    # Any 5 consecutive frame indices hold at most 2 flags.
    assert all(sum(s <= t < s + 5 for t in flagged) <= 2 for s in range(30))


def test_decision_timing_with_the_defaults() -> None:
    selector = OnlineSelector()
    for t in range(20):
        assert selector.push(t, 1.0) == []
    assert [d.frame for d in selector.push(20, 1.0)] == [0]  # 0 + dt + dt1 = 20
    assert [d.frame for d in selector.push(25, 1.0)] == [1, 2, 3, 4, 5]  # a gap
    assert selector.pending == 22 - 6
    assert [d.frame for d in selector.finish()] == [*range(6, 21), 25]
    assert selector.finish() == []


def test_long_stream_keeps_memory_bounded() -> None:
    selector = OnlineSelector(threshold="adaptive", history=500, min_history=100)
    rng = np.random.default_rng(0)
    for t, s in enumerate(rng.normal(size=5000)):
        selector.push(t, s)
    assert len(selector._raw) <= 2 * 5 + 1
    assert len(selector._smoothed) <= 2 * 15 + 1
    assert selector.pending == 20


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dt": -1}, "dt must be >= 0"),
        ({"dt1": -1}, "dt1 must be >= 0"),
        ({"dt2": 1.0}, "dt2 must be an integer"),
        ({"sigma": 0.0}, "sigma must be finite and > 0"),
        ({"threshold": "auto"}, "'adaptive'"),
        ({"threshold": math.nan}, "NaN"),
        ({"max_flags": 3}, "max_flags and per_frames go together"),
        ({"per_frames": 30}, "max_flags and per_frames go together"),
        ({"max_flags": -1, "per_frames": 30}, "max_flags must be >= 0"),
        ({"max_flags": 1, "per_frames": 0}, "per_frames must be >= 1"),
        ({"target_rate": 0.0}, "target_rate"),
        ({"target_rate": 1.5}, "target_rate"),
        ({"history": 0}, "history must be >= 1"),
        ({"min_history": 100, "history": 50}, "min_history"),
        ({"earlier": [-4]}, "negative frame index -4"),
    ],
)
def test_bad_configuration_raises_value_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OnlineSelector(**kwargs)


def test_bad_frames_raise_value_error_naming_the_problem() -> None:
    selector = OnlineSelector()
    selector.push(10, 0.5)
    with pytest.raises(ValueError, match="frame 7 pushed after frame 10"):
        selector.push(7, 0.5)
    with pytest.raises(ValueError, match="frame 10 pushed after frame 10"):
        selector.push(10, 0.5)
    with pytest.raises(ValueError, match="score of frame 11 must be finite, got nan"):
        selector.push(11, math.nan)
    with pytest.raises(ValueError, match="finite, got inf"):
        selector.push(11, math.inf)
    with pytest.raises(ValueError, match="frame index must be >= 0"):
        selector.push(-1, 0.5)
    with pytest.raises(ValueError, match="frame index must be an integer"):
        selector.push(11.0, 0.5)
    with pytest.raises(ValueError, match="1-D of one length"):
        selector.push_many([11, 12], [0.5])
    # A refused frame changes nothing: the stream continues where it was.
    assert selector.last_frame == 10
    selector.push(11, np.float32(0.25))
    selector.finish()
    with pytest.raises(ValueError, match="after finish"):
        selector.push(12, 0.5)
