"""alscout.runtime.scoring against the plain NumPy references of SPEC.md §1."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from alscout.runtime.scoring import (
    aggregate,
    image_scores,
    mc_dropout_scores,
    merge_mirrored,
    pixel_scores,
)

from naive.scoring import (
    naive_aggregate,
    naive_entropy,
    naive_mc_dropout,
    naive_pixel_scores,
    naive_window_mean,
    naive_window_mean_fast,
)

RTOL = 1e-4
ATOL = 1e-7


def random_probs(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Smooth-ish probabilities with saturated pixels, like sigmoid outputs."""
    logits = rng.normal(0, 4, size=shape)
    probs = 1 / (1 + np.exp(-logits))
    probs.reshape(-1)[:: max(1, probs.size // 17)] = 0.0
    probs.reshape(-1)[5 :: max(1, probs.size // 13)] = 1.0
    return probs.astype(np.float32)


def test_summed_area_reference_equals_loop_reference():
    x = np.random.default_rng(0).random((11, 7))
    for radius in (0, 1, 3, 20):
        np.testing.assert_allclose(naive_window_mean_fast(x, radius), naive_window_mean(x, radius))


@pytest.mark.parametrize(
    ("k", "h", "w", "radius"),
    [
        (5, 48, 64, 9),  # the default radius
        (1, 13, 17, 2),  # K = 1
        (3, 5, 4, 9),  # radius larger than the frame
        (2, 1, 1, 0),  # a single pixel
        (5, 37, 29, 0),  # radius 0: divergence is exactly 0
        (4, 60, 3, 4),  # narrower than the window
    ],
)
@pytest.mark.parametrize("method", ["divergence", "entropy"])
def test_pixel_scores_equal_reference(k, h, w, radius, method):
    probs = random_probs(np.random.default_rng(k * h * w + radius), k, h, w)
    expected = naive_pixel_scores(probs, radius, method)
    got = pixel_scores(probs, radius=radius, method=method)
    assert got.shape == (h, w) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_pixel_scores_are_accurate_far_beyond_the_spec_tolerance():
    probs = random_probs(np.random.default_rng(3), 5, 40, 50)
    np.testing.assert_allclose(pixel_scores(probs), naive_pixel_scores(probs), rtol=1e-6, atol=1e-9)


def test_batches_equal_frame_by_frame():
    probs = random_probs(np.random.default_rng(1), 3, 5, 31, 45)
    batch = pixel_scores(probs, radius=4)
    assert batch.shape == (3, 31, 45)
    for n in range(3):
        np.testing.assert_array_equal(batch[n], pixel_scores(probs[n], radius=4))
        np.testing.assert_allclose(batch[n], naive_pixel_scores(probs[n], 4), rtol=RTOL, atol=ATOL)


def test_float64_input_is_scored_the_same():
    probs = random_probs(np.random.default_rng(2), 2, 20, 20)
    np.testing.assert_allclose(
        pixel_scores(probs.astype(np.float64)), pixel_scores(probs), rtol=1e-6, atol=1e-9
    )


def test_probabilities_exactly_zero_and_one_give_zero_entropy():
    probs = np.zeros((2, 9, 9), np.float32)
    probs[1] = 1.0
    assert np.all(pixel_scores(probs, method="entropy") == 0.0)
    np.testing.assert_allclose(pixel_scores(probs), 0.0, atol=1e-12)
    half = np.full((1, 3, 3), 0.5, np.float32)
    np.testing.assert_allclose(pixel_scores(half, method="entropy"), np.log(2), rtol=1e-7)


def test_checkerboard_of_certain_pixels_scores_ln2():
    """Neighbours that disagree with certainty: H(mean) = ln 2, mean H = 0."""
    probs = (np.indices((1, 40, 40)).sum(0) % 2).astype(np.float32)
    scores = pixel_scores(probs, radius=20)
    np.testing.assert_allclose(scores, naive_pixel_scores(probs, 20), rtol=RTOL, atol=ATOL)
    assert scores.max() == pytest.approx(np.log(2), rel=1e-3)


unit_maps = arrays(
    np.float32,
    st.tuples(st.integers(1, 3), st.integers(1, 12), st.integers(1, 12)),
    elements=st.floats(0, 1, width=32),
)


@settings(max_examples=60, deadline=None)
@given(probs=unit_maps, radius=st.integers(0, 6))
def test_divergence_is_non_negative_and_matches_reference(probs, radius):
    scores = pixel_scores(probs, radius=radius)
    assert np.all(scores >= -1e-9)
    np.testing.assert_allclose(scores, naive_pixel_scores(probs, radius), rtol=RTOL, atol=ATOL)


@settings(max_examples=30, deadline=None)
@given(
    value=st.floats(0, 1, width=32),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 30), st.integers(1, 30)),
    radius=st.integers(0, 12),
)
def test_divergence_is_zero_on_constant_maps(value, shape, radius):
    probs = np.full(shape, value, np.float32)
    np.testing.assert_allclose(pixel_scores(probs, radius=radius), 0.0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(probs=unit_maps, radius=st.integers(0, 6), method=st.sampled_from(["divergence", "entropy"]))
def test_mirroring_the_maps_mirrors_the_scores(probs, radius, method):
    scores = pixel_scores(probs, radius=radius, method=method)
    mirrored = pixel_scores(np.ascontiguousarray(probs[:, :, ::-1]), radius=radius, method=method)
    np.testing.assert_allclose(mirrored, scores[:, ::-1], rtol=1e-6, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(probs=unit_maps, radius=st.integers(0, 6), seed=st.integers(0, 1000))
def test_permuting_heads_changes_nothing(probs, radius, seed):
    order = np.random.default_rng(seed).permutation(probs.shape[0])
    np.testing.assert_allclose(
        pixel_scores(probs[order], radius=radius), pixel_scores(probs, radius=radius), atol=1e-6
    )


def test_aggregate_by_hand():
    score_map = np.arange(20, dtype=np.float32).reshape(4, 5)
    # regions of 3: rows 0-2 / 3, columns 0-2 / 3-4 -> maxima 12, 14, 17, 19
    assert aggregate(score_map, region=3) == pytest.approx((12 + 14 + 17 + 19) / 4)
    assert aggregate(score_map, region=3, how="mean") == pytest.approx(9.5)
    assert aggregate(score_map, region=100) == pytest.approx(19.0)
    assert aggregate(score_map, region=1) == pytest.approx(9.5)


@pytest.mark.parametrize(
    ("h", "w", "region"), [(480, 640, 30), (25, 20, 30), (61, 59, 30), (7, 9, 4)]
)
@pytest.mark.parametrize("how", ["maxpool", "mean"])
def test_aggregate_equals_reference(h, w, region, how):
    maps = np.random.default_rng(h + w).random((3, h, w)).astype(np.float32)
    z = aggregate(maps, region=region, how=how)
    assert z.shape == (3,) and z.dtype == np.float64
    for n in range(3):
        assert z[n] == pytest.approx(naive_aggregate(maps[n], region, how), rel=1e-9)
    assert isinstance(aggregate(maps[0], region=region, how=how), float)


def test_image_scores_chain_scoring_and_aggregation():
    probs = random_probs(np.random.default_rng(4), 2, 5, 50, 70)
    z = image_scores(probs, radius=9, region=30)
    expected = [naive_aggregate(naive_pixel_scores(p, 9), 30) for p in probs]
    np.testing.assert_allclose(z, expected, rtol=RTOL)


def test_mc_dropout_equals_reference():
    rng = np.random.default_rng(5)
    samples = random_probs(rng, 2, 10, 3, 21, 19)
    got = mc_dropout_scores(samples)
    assert got.shape == (2, 21, 19)
    for n in range(2):
        np.testing.assert_allclose(got[n], naive_mc_dropout(samples[n]), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(mc_dropout_scores(samples[0]), got[0])
    # identical passes carry no disagreement
    same = np.repeat(samples[:1, :1], 4, axis=1)
    np.testing.assert_allclose(mc_dropout_scores(same), 0.0, atol=1e-12)


def test_merge_mirrored_flips_back_and_averages():
    rng = np.random.default_rng(6)
    probs = rng.random((2, 3, 4, 5)).astype(np.float32)
    mirror_view = rng.random((2, 3, 4, 5)).astype(np.float32)
    merged = merge_mirrored(probs, mirror_view)
    np.testing.assert_allclose(merged, (probs + mirror_view[..., ::-1]) / 2, rtol=1e-6)
    # a symmetric model gives back its own maps
    np.testing.assert_allclose(merge_mirrored(probs, probs[..., ::-1]), probs, rtol=1e-6)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: pixel_scores(np.zeros((4, 4), np.float32)), "rank"),
        (lambda: pixel_scores(np.zeros((1, 1, 2, 4, 4), np.float32)), "rank"),
        (lambda: pixel_scores(np.full((1, 4, 4), np.nan, np.float32)), "NaN"),
        (lambda: pixel_scores(np.full((1, 4, 4), 1.5, np.float32)), r"outside \[0, 1\]"),
        (lambda: pixel_scores(np.full((1, 4, 4), -0.1, np.float32)), r"outside \[0, 1\]"),
        (lambda: pixel_scores(np.zeros((1, 4, 4), np.float32), radius=-1), "radius"),
        (lambda: pixel_scores(np.zeros((1, 4, 4), np.float32), method="bald"), "method"),
        (lambda: pixel_scores(np.zeros((1, 4, 4), np.int64)), "floating"),
        (lambda: pixel_scores(np.zeros((1, 0, 4), np.float32)), "empty"),
        (lambda: aggregate(np.zeros((4, 4), np.float32), region=0), "region"),
        (lambda: aggregate(np.zeros(4, np.float32)), "rank"),
        (lambda: aggregate(np.full((4, 4), np.nan, np.float32)), "NaN"),
        (lambda: aggregate(np.zeros((4, 4), np.float32), how="median"), "aggregation"),
        (lambda: mc_dropout_scores(np.zeros((4, 4, 4), np.float32)), "rank"),
        (lambda: merge_mirrored(np.zeros((1, 2, 2)), np.zeros((1, 2, 3))), "same shape"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("method", ["divergence", "entropy"])
@pytest.mark.parametrize(("row", "value"), [(0, np.nan), (17, 1.0001), (39, np.nan), (63, -1e-6)])
def test_one_bad_value_anywhere_in_a_batch_is_found_once(method, row, value):
    """The divergence kernel checks values as it reads them, band by band: each counted once."""
    probs = np.full((1, 2, 64, 9), 0.25, np.float32)  # one frame: a band per thread
    probs[0, 1, row, 4] = value
    kind = "NaN" if np.isnan(value) else r"1 value\(s\) outside \[0, 1\]"
    with pytest.raises(ValueError, match=kind):
        pixel_scores(probs, radius=5, method=method)


def test_entropy_reference_handles_the_edges():
    np.testing.assert_array_equal(naive_entropy(np.array([0.0, 1.0])), [0.0, 0.0])


def test_kernels_agree_with_the_reference_without_jit():
    """The kernels are plain Python too: NUMBA_DISABLE_JIT=1 must give the same numbers."""
    code = (
        "import numpy as np\n"
        "from alscout.runtime.scoring import pixel_scores, aggregate, mc_dropout_scores\n"
        "rng = np.random.default_rng(0)\n"
        "p = rng.random((2, 2, 7, 9)).astype(np.float32)\n"
        "s = pixel_scores(p, radius=2)\n"
        "e = pixel_scores(p, method='entropy')\n"
        "m = mc_dropout_scores(p)\n"
        "import io, sys\n"
        "buffer = io.BytesIO()\n"
        "parts = [s.ravel(), e.ravel(), m.ravel(), aggregate(s, region=4)]\n"
        "np.save(buffer, np.concatenate(parts))\n"
        "sys.stdout.buffer.write(buffer.getvalue())\n"
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, check=True, timeout=120
    )
    without_jit = np.load(io.BytesIO(result.stdout))
    rng = np.random.default_rng(0)
    p = rng.random((2, 2, 7, 9)).astype(np.float32)
    s = pixel_scores(p, radius=2)
    entropy = pixel_scores(p, method="entropy")
    with_jit = np.concatenate(
        [s.ravel(), entropy.ravel(), mc_dropout_scores(p).ravel(), aggregate(s, region=4)]
    )
    np.testing.assert_allclose(without_jit, with_jit, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(s[0], naive_pixel_scores(p[0], 2), rtol=RTOL, atol=ATOL)
