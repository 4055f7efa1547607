"""The scorer as torch modules (export/scores_graph.py) against the float64 Numba path.

Float32 modules, float64 reference: z to 1e-4 relative (SPEC §4) with room to spare,
pixel scores and heat maps to 1e-3 absolute, on random, synthetic and near-constant
maps; the last are where a plain float32 entropy difference fails (tested too, so the
reason for the KL form stays visible).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from alscout.errors import ModelError
from alscout.runtime.model_info import GraphScoring
from alscout.runtime.pipeline import block_max
from alscout.runtime.scoring import aggregate, merge_mirrored, pixel_scores

torch = pytest.importorskip("torch", reason="the in-graph scorer is a torch module")
from alscout.export.scores_graph import (  # noqa: E402
    MirrorBatch,
    PixelScores,
    ScoredDetector,
    ScoreHead,
    bernoulli_kl,
    binary_entropy,
    log1p,
    window_mean,
)

Z_RTOL = 1e-4


def blobs(rng: np.random.Generator, n: int, k: int, h: int, w: int) -> np.ndarray:
    """Synthetic head maps: a low background with a few Gaussian 'pedestrians'."""
    yy, xx = np.mgrid[:h, :w]
    maps = np.full((n, k, h, w), 1e-3)
    for i in range(n):
        for j in range(k):
            for _ in range(3):
                cy, cx, s = rng.integers(0, h), rng.integers(0, w), 3 + 2 * j
                maps[i, j] += 0.95 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return np.clip(maps, 0, 1).astype(np.float32)


def maps_of(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "random":
        return rng.random((2, 5, 61, 83), dtype=np.float32)
    if kind == "blobs":
        return blobs(rng, 2, 5, 90, 120)
    if kind == "near-constant":  # an untrained model: z ~ 1e-6
        return (0.3 + 1e-3 * rng.random((2, 5, 64, 80))).astype(np.float32)
    if kind == "saturated":  # exact 0 and 1 (0 ln 0)
        return rng.integers(0, 2, (2, 3, 40, 50)).astype(np.float32)
    raise AssertionError(kind)


def torch_scores(module, probs: np.ndarray):
    with torch.inference_mode():
        out = module(torch.from_numpy(probs))
    return [o.numpy() for o in out] if isinstance(out, tuple) else out.numpy()


@pytest.mark.parametrize("kind", ["random", "blobs", "near-constant", "saturated"])
@pytest.mark.parametrize("method", ["divergence", "entropy"])
def test_z_and_heatmap_equal_the_numba_path(kind, method):
    rng = np.random.default_rng(3)
    probs = maps_of(kind, rng)
    scoring = GraphScoring(radius=9, region=30, method=method, double_evaluation=False)
    z, heatmap = torch_scores(ScoreHead(scoring), probs)
    maps = pixel_scores(probs, radius=9, method=method)
    z_ref = aggregate(maps, region=30)
    assert z.dtype == np.float32 and z.shape == (2,)
    assert np.all(np.abs(z - z_ref) <= Z_RTOL * np.abs(z_ref) + 1e-12), (z, z_ref)
    assert heatmap.shape == (2, math.ceil(probs.shape[2] / 16), math.ceil(probs.shape[3] / 16))
    np.testing.assert_allclose(heatmap, block_max(maps, 16), rtol=0, atol=1e-3)


def test_near_constant_maps_keep_their_digits_where_the_entropy_form_loses_them():
    """z ~ 1e-6: the KL form holds 1e-4; H(mean) - mean H in float32 does not."""
    probs = maps_of("near-constant", np.random.default_rng(0))
    z_ref = aggregate(pixel_scores(probs, 9), 30)
    z = torch_scores(PixelScores(9), probs)
    z = aggregate(z, 30)
    assert np.max(np.abs(z - z_ref) / z_ref) < Z_RTOL
    p = torch.from_numpy(probs)
    naive = binary_entropy(window_mean(p, 9)).sum(1) - window_mean(
        binary_entropy(p).sum(1, keepdim=True), 9
    ).squeeze(1)
    z_naive = aggregate(naive.numpy(), 30)
    assert np.max(np.abs(z_naive - z_ref) / z_ref) > 10 * Z_RTOL


@pytest.mark.parametrize(
    ("radius", "shape"), [(0, (1, 2, 9, 11)), (4, (1, 5, 3, 7)), (30, (2, 5, 20, 25))]
)
def test_pixel_scores_clip_windows_to_the_frame(radius, shape):
    """Radius 0, a frame thinner than the window, a radius larger than the frame."""
    probs = np.random.default_rng(radius).random(shape, dtype=np.float32)
    got = torch_scores(PixelScores(radius), probs)
    np.testing.assert_allclose(got, pixel_scores(probs, radius), rtol=0, atol=2e-6)


def test_window_mean_divides_by_the_in_frame_pixels():
    x = np.random.default_rng(1).random((1, 1, 7, 10))
    got = window_mean(torch.from_numpy(x), 2).numpy()[0, 0]
    for i, j in [(0, 0), (3, 5), (6, 9), (0, 9), (6, 1)]:
        window = x[0, 0, max(0, i - 2) : i + 3, max(0, j - 2) : j + 3]
        assert got[i, j] == pytest.approx(window.mean(), rel=1e-12)


def test_the_kl_form_is_the_divergence_for_any_centre():
    """H(m) - mean H(p) = mean KL(p||c) - KL(m||c), in float64, whatever c is."""
    p = torch.from_numpy(np.random.default_rng(2).random(200))
    m = p.mean()
    gap = binary_entropy(m) - binary_entropy(p).mean()
    for c in (0.01, 0.3, 0.5, 0.97):
        c = torch.tensor(c, dtype=torch.float64)
        via_kl = bernoulli_kl(p, c).mean() - bernoulli_kl(m, c)
        assert float(via_kl) == pytest.approx(float(gap), rel=1e-12)
    assert float(bernoulli_kl(torch.tensor(0.25, dtype=torch.float64), torch.tensor(0.25))) == 0


def test_log1p_keeps_small_arguments_and_exports_without_a_log1p_op():
    x = np.array([1e-12, -3e-9, 1e-7, 2.5e-4, -0.5, 0.14, 7.0, -1 + 2**-23], np.float32)
    got = log1p(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, np.log1p(x.astype(np.float64)), rtol=5e-7)
    assert (torch.log(1 + torch.tensor(1e-9)) == 0).item()  # what the plain form returns


def test_double_evaluation_merges_the_mirrors_as_the_pipeline_does():
    rng = np.random.default_rng(4)
    frames, mirrors = rng.random((2, 3, 5, 33, 47), dtype=np.float32)
    both = np.concatenate([frames, mirrors])
    scoring = GraphScoring(radius=3, region=10)
    z, heatmap, probs = torch_scores(ScoreHead(scoring, keep_probs=True), both)
    merged = merge_mirrored(frames, mirrors)
    np.testing.assert_array_equal(probs, merged)  # the same float32 rounding
    maps = pixel_scores(merged, 3)
    np.testing.assert_allclose(z, aggregate(maps, 10), rtol=Z_RTOL)
    np.testing.assert_allclose(heatmap, block_max(maps, 16), atol=1e-3)


def test_mean_aggregation_and_other_strides():
    probs = blobs(np.random.default_rng(5), 1, 5, 50, 70)
    scoring = GraphScoring(radius=5, aggregation="mean", heatmap_stride=8, double_evaluation=False)
    z, heatmap = torch_scores(ScoreHead(scoring), probs)
    maps = pixel_scores(probs, 5)
    np.testing.assert_allclose(z, aggregate(maps, 30, how="mean"), rtol=Z_RTOL)
    assert heatmap.shape == (1, 7, 9)
    np.testing.assert_allclose(heatmap, block_max(maps, 8), atol=1e-3)


class Sigmoidal(torch.nn.Module):
    """A detector stand-in: 3x3 conv to K maps, sigmoid; not mirror-symmetric."""

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, k, 3, padding=1)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


def test_scored_detector_is_the_detector_then_the_cpu_path():
    detector = Sigmoidal().eval()
    images = np.random.default_rng(6).standard_normal((3, 3, 40, 56), dtype=np.float32)
    z, heatmap = torch_scores(ScoredDetector(detector, GraphScoring(radius=4, region=12)), images)
    with torch.inference_mode():
        probs = detector(torch.from_numpy(np.concatenate([images, images[..., ::-1]]))).numpy()
    maps = pixel_scores(merge_mirrored(probs[:3], probs[3:]), 4)
    np.testing.assert_allclose(z, aggregate(maps, 12), rtol=Z_RTOL)
    np.testing.assert_allclose(heatmap, block_max(maps, 16), atol=1e-3)
    single = ScoredDetector(detector, GraphScoring(radius=4, region=12, double_evaluation=False))
    z_single, _ = torch_scores(single, images)
    assert not np.allclose(z_single, z, rtol=1e-3)  # the mirror changes the score


def test_under_autocast_the_scores_stay_float32():
    detector = Sigmoidal().eval()
    images = torch.from_numpy(np.random.default_rng(7).standard_normal((2, 3, 32, 32), np.float32))
    scored = ScoredDetector(detector, GraphScoring(radius=2, region=8))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        z, heatmap = scored(images)
    assert z.dtype == heatmap.dtype == torch.float32


def test_mirror_batch_puts_the_frames_first():
    x = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).reshape(2, 3, 2, 4)
    out = MirrorBatch()(x)
    assert torch.equal(out[:2], x) and torch.equal(out[2:], x.flip(3))


def test_bad_settings_are_refused():
    with pytest.raises(ModelError, match="method"):
        PixelScores(9, "variance")
    with pytest.raises(ModelError, match="radius"):
        PixelScores(-1)
