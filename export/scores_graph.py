"""The image score of SPEC §1 as torch modules: one code path for PyTorch and for ONNX.

:class:`ScoreHead` turns head probabilities into the image score z and the heat map;
:class:`MirrorBatch` puts each frame and its horizontal mirror in one batch;
:class:`ScoredDetector` chains the two around a detector. The same modules run in
PyTorch (CPU or CUDA, ``bench/gpu_check.py``) and are traced into the ONNX graph of a
model with scores inside it (:mod:`alscout.export.onnx_scores`), so the two cannot
drift apart. Everything is float32, as inside an exported graph; the float64 Numba
path (:mod:`alscout.runtime.scoring`) is the reference they are tested against
(docs/scoring.md, "Scores inside the graph", states the error).

Shapes: ``images [N, 3, H, W]``; ``probs [N, K, H, W]``; score map ``S [N, H, W]``;
``z [N]``; ``heatmap [N, ceil(H/s), ceil(W/s)]`` with s the heat-map stride.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alscout.runtime.model_info import GraphScoring

__all__ = [
    "MirrorBatch",
    "PixelScores",
    "ScoreHead",
    "ScoredDetector",
    "bernoulli_kl",
    "binary_entropy",
    "log1p",
    "window_mean",
]

#: ``x ln x`` is taken of ``max(x, _TINY)``, so ``0 ln 0`` is ``0 * ln(1e-30) = 0``
#: exactly (float32's smallest normal is ~1.2e-38; 1e-30 keeps clear of denormals,
#: which TensorRT and some CPUs flush to zero).
_TINY = 1e-30
#: ``log1p`` arguments are kept above ``-1 + 2^-23`` (the next float32 above -1), so
#: ``0 * log1p(-1)`` is ``0 * -15.9 = 0``, not ``0 * -inf = NaN``.
_ABOVE_MINUS_ONE = -1.0 + 2.0**-23
#: the centre c of each head's map is kept inside [1e-6, 1 - 1e-6], where ``ln c`` and
#: ``ln(1 - c)`` are finite; any c in (0, 1) gives the same score (see
#: :func:`bernoulli_kl`), so clipping it changes only rounding.
_CENTRE_MIN = 1e-6


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """``H(p) = -p ln p - (1-p) ln(1-p)`` in nats, elementwise, for ``p`` in [0, 1].

    Values a rounding step outside [0, 1] are clipped first.
    """
    p = p.clamp(0.0, 1.0)
    q = 1.0 - p
    return -(p * torch.log(p.clamp_min(_TINY)) + q * torch.log(q.clamp_min(_TINY)))


def log1p(x: torch.Tensor) -> torch.Tensor:
    """``ln(1 + x)`` to float32 accuracy also for small ``|x|``, for ``x > -1``.

    ONNX has no Log1p, and ``torch.log1p`` exports as ``Log(1 + x)``, which loses the
    digits of a small x. Here ``u = 1 + x`` rounds, ``u - 1`` is exact (Sterbenz), so
    ``e = (u - 1) - x`` is u's rounding error, and ``ln(1 + x) = ln(u - e) = ln u - e/u``
    to O(e^2) ~ 1e-15. Tested to 3e-7 relative against float64 over 1e-12 <= |x| <= 1e3
    (ONNX Runtime and PyTorch), with no branch, so it exports as plain arithmetic.
    """
    u = 1.0 + x
    return torch.log(u) - ((u - 1.0) - x) / u


def bernoulli_kl(p: torch.Tensor, c: torch.Tensor, d: torch.Tensor | None = None) -> torch.Tensor:
    """``KL(p || c) = p ln(p/c) + (1-p) ln((1-p)/(1-c))`` of Bernoulli distributions.

    ``p`` in [0, 1]; ``c`` in (0, 1), broadcast against ``p``; ``d``: ``p - c`` when it
    is known more exactly than ``p - c`` rounds (a window mean of ``p - c``). Written
    with :func:`log1p` of ``d / c`` and ``-d / (1 - c)``, and ``1 - p`` as
    ``(1 - c) - d``, so that no digit of a small d is lost before the two terms (each
    ~|d|, of opposite signs) meet: the result is small, and accurate, where p is near c.

    Why: ``H(p) = T_c(p) - KL(p || c)`` with ``T_c`` the tangent of H at c, an affine
    function of p. The window mean of an affine function is that function of the window
    mean m, so the divergence ``H(m) - mean H(p)`` equals ``mean KL(p || c) - KL(m || c)``
    exactly, for any constant c; with c near the map's values both terms are small,
    where the entropy form subtracts two O(K ln 2) numbers (docs/scoring.md). Both
    terms must be computed this same way: plain ``ln c`` and ``ln(1 - c)`` carry
    rounding errors affine in p, which the window mean does not cancel against the
    second term's.
    """
    if d is None:
        d = p - c
    ours = p * log1p((d * (1.0 / c)).clamp_min(_ABOVE_MINUS_ONE))
    theirs = ((1.0 - c) - d) * log1p((d * (-1.0 / (1.0 - c))).clamp_min(_ABOVE_MINUS_ONE))
    return ours + theirs


def window_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the ``(2r+1) x (2r+1)`` window clipped to the frame, per channel.

    ``x``: ``[N, C, H, W]`` -> ``[N, C, H, W]``. The clipped window is a rectangle, so
    its mean is the row-wise clipped mean of the column-wise clipped means: two 1-D
    average pools that divide by the in-frame count (``count_include_pad=False``),
    ``2 (2r+1)`` adds per value rather than ``(2r+1)^2``.
    """
    if radius == 0:
        return x
    side = 2 * radius + 1
    rows = F.avg_pool2d(x, (1, side), stride=1, padding=(0, radius), count_include_pad=False)
    return F.avg_pool2d(rows, (side, 1), stride=1, padding=(radius, 0), count_include_pad=False)


class PixelScores(nn.Module):
    """Score map S of SPEC §1 (eq. 1-4): ``probs [N, K, H, W]`` -> ``[N, H, W]``.

    ``"divergence"``: ``sum_k H(mean_win p_k) - mean_win H(p_k)``, computed as
    ``mean_win sum_k KL(p_k || c_k) - sum_k KL(m_k || c_k)`` with ``c_k`` the mean of
    head k's map over the frame and ``m_k = c_k + mean_win(p_k - c_k)``
    (:func:`bernoulli_kl` says why this is the same number and why it keeps float32's
    digits). The KL term is linear in the window mean, so the heads' terms are summed
    before the one window mean, as the Numba kernel does with the entropies.
    ``"entropy"``: ``sum_k H(p_k)``.
    """

    def __init__(self, radius: int = 9, method: str = "divergence") -> None:
        super().__init__()
        GraphScoring(radius=radius, method=method)  # validates both
        self.radius = radius
        self.method = method

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        if self.method == "entropy":
            return binary_entropy(probs).sum(dim=1)
        centre = probs.mean(dim=(2, 3), keepdim=True).clamp(_CENTRE_MIN, 1.0 - _CENTRE_MIN)
        deviation = probs - centre
        kl = bernoulli_kl(probs, centre, deviation).sum(dim=1, keepdim=True)
        mean_kl = window_mean(kl, self.radius)
        offset = window_mean(deviation, self.radius)  # m - c, without rounding m
        kl_of_mean = bernoulli_kl(centre + offset, centre, offset).sum(dim=1)
        return mean_kl.squeeze(1) - kl_of_mean


class ScoreHead(nn.Module):
    """Probabilities -> ``(z [N], heatmap [N, ceil(H/s), ceil(W/s)])`` (+ ``probs``).

    With ``scoring.double_evaluation`` the input is ``[2N, K, H, W]``: the N frames,
    then their N mirrors (as :class:`MirrorBatch` orders them); the mirrors' maps are
    flipped back and averaged with the frames' (``(a + b) * 0.5`` in float32, the
    same rounding as :func:`~alscout.runtime.scoring.merge_mirrored`). Then the score
    map S, z by the aggregation (R x R region maxima tiled from the top-left, edge
    regions smaller, then their mean; or the mean of S), and the heat map: maxima of
    s x s blocks of S, tiled the same way. ``keep_probs`` adds the merged
    probabilities ``[N, K, H, W]`` as a third output.
    """

    def __init__(self, scoring: GraphScoring, keep_probs: bool = False) -> None:
        super().__init__()
        self.scoring = scoring
        self.keep_probs = keep_probs
        self.pixel_scores = PixelScores(scoring.radius, scoring.method)

    def forward(self, probs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.scoring.double_evaluation:
            n = probs.shape[0] // 2
            probs = (probs[:n] + probs[n:].flip(3)) * 0.5
        maps = self.pixel_scores(probs).unsqueeze(1)  # [N, 1, H, W]
        region = self.scoring.region
        if self.scoring.aggregation == "maxpool":
            cells = F.max_pool2d(maps, region, stride=region, ceil_mode=True)
            z = cells.flatten(1).mean(dim=1)
        else:
            z = maps.flatten(1).mean(dim=1)
        stride = self.scoring.heatmap_stride
        heatmap = F.max_pool2d(maps, stride, stride=stride, ceil_mode=True).squeeze(1)
        if self.keep_probs:
            return z, heatmap, probs
        return z, heatmap


class MirrorBatch(nn.Module):
    """``images [N, 3, H, W]`` -> ``[2N, 3, H, W]``: the frames, then their mirrors."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([images, images.flip(3)], dim=0)


class ScoredDetector(nn.Module):
    """A detector ``images -> probs`` with the scores after it: ``images -> (z, heatmap)``.

    ``detector``: any module ``[B, 3, H, W] -> [B, K, H, W]`` probabilities. With double
    evaluation it sees ``2N`` images per call (the frames and their mirrors together).
    Under ``torch.autocast`` the detector runs in the reduced precision and the scores
    in float32: its probabilities are cast up and autocast is off for the head.
    """

    def __init__(self, detector: nn.Module, scoring: GraphScoring, keep_probs: bool = False):
        super().__init__()
        self.detector = detector
        self.mirror = MirrorBatch() if scoring.double_evaluation else None
        self.head = ScoreHead(scoring, keep_probs)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = self.mirror(images) if self.mirror is not None else images
        probs = self.detector(batch)
        with torch.autocast(device_type=probs.device.type, enabled=False):
            return self.head(probs.float())
