"""Temporal smoothing (SPEC §2a, eq. 6) against a direct loop of the formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alscout.runtime.temporal import gaussian_weights, smooth


def smooth_loop(z: list[float], frames: list[int], dt: int, sigma: float) -> list[float]:
    """The formula, one frame at a time, in plain Python."""
    out = []
    for t in frames:
        num = den = 0.0
        for s, z_s in zip(frames, z, strict=True):
            d = s - t
            if abs(d) <= dt:
                w = math.exp(-(d * d) / (2.0 * sigma * sigma))
                num += w * z_s
                den += w
        out.append(num / den)
    return out


scores = st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=0, max_size=80)


@settings(max_examples=150, deadline=None)
@given(z=scores, dt=st.integers(0, 12), sigma=st.floats(0.1, 20.0))
def test_smooth_equals_direct_loop(z: list[float], dt: int, sigma: float) -> None:
    got = smooth(np.array(z), dt=dt, sigma=sigma)
    want = smooth_loop(z, list(range(len(z))), dt, sigma)
    assert got.dtype == np.float64 and got.shape == (len(z),)
    np.testing.assert_allclose(
        got, want, rtol=1e-12, atol=1e-12 * (1 + max(map(abs, z), default=0))
    )


@settings(max_examples=150, deadline=None)
@given(
    z=scores,
    gaps=st.lists(st.integers(1, 8), min_size=80, max_size=80),
    dt=st.integers(0, 12),
    sigma=st.floats(0.1, 20.0),
)
def test_smooth_with_missing_frames_equals_direct_loop(
    z: list[float], gaps: list[int], dt: int, sigma: float
) -> None:
    frames = np.cumsum(gaps[: len(z)]).tolist()
    got = smooth(np.array(z), dt=dt, sigma=sigma, frames=np.array(frames, dtype=np.int64))
    want = smooth_loop(z, frames, dt, sigma)
    np.testing.assert_allclose(
        got, want, rtol=1e-12, atol=1e-12 * (1 + max(map(abs, z), default=0))
    )


def test_edges_renormalise_over_frames_that_exist() -> None:
    z = np.zeros(20)
    z[0] = 1.0
    w = gaussian_weights(5, 2.5)
    got = smooth(z)
    assert got[0] == pytest.approx(w[0] / w.sum())  # window 0..5 only
    assert got[3] == pytest.approx(w[3] / (w.sum() + w[1:4].sum()))  # window 0..8
    assert got[6] == 0.0  # frame 0 is 6 > dt frames away


def test_constant_stays_constant_and_dt0_is_identity() -> None:
    np.testing.assert_allclose(smooth(np.full(50, 3.25)), 3.25, rtol=1e-15)
    z = np.random.default_rng(1).normal(size=30).astype(np.float32)
    out = smooth(z, dt=0)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, z.astype(np.float64))


def test_weights_are_the_gaussian() -> None:
    np.testing.assert_allclose(
        gaussian_weights(3, 2.0), [math.exp(-(d * d) / 8.0) for d in range(4)], rtol=1e-15
    )


def test_short_and_empty_recordings() -> None:
    assert smooth(np.zeros(0)).shape == (0,)
    np.testing.assert_allclose(
        smooth(np.array([1.0, 3.0]), dt=5), smooth_loop([1, 3], [0, 1], 5, 2.5)
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"z": np.zeros((3, 2))}, "1-D"),
        ({"z": np.array([0.0, np.nan])}, r"finite: z\[1\] = nan"),
        ({"z": np.array([np.inf])}, "finite"),
        ({"z": np.array(["a"])}, "real numbers"),
        ({"z": np.zeros(3), "dt": -1}, "dt must be >= 0"),
        ({"z": np.zeros(3), "dt": 2.5}, "dt must be an integer"),
        ({"z": np.zeros(3), "sigma": 0.0}, "sigma must be finite and > 0"),
        ({"z": np.zeros(3), "sigma": -1.0}, "sigma must be finite and > 0"),
        ({"z": np.zeros(3), "sigma": float("nan")}, "sigma"),
        ({"z": np.zeros(3), "frames": np.array([0, 2, 2])}, "frame 2 follows frame 2"),
        ({"z": np.zeros(3), "frames": np.array([0, 1])}, "one index per score"),
        ({"z": np.zeros(2), "frames": np.array([0.0, 1.0])}, "integer"),
    ],
)
def test_bad_input_raises_value_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        smooth(**kwargs)
