"""Thresholds that flag a target fraction of frames, set once on a calibration set.

The streaming rule (SPEC §2b) flags a frame when its smoothed score is a local maximum
(a *candidate*) at or above the threshold; whether a frame is a candidate does not
depend on the threshold. So on a calibration set the threshold that flags a fraction
``rate`` of ``n`` frames lies between the k-th and (k+1)-th largest candidate scores,
``k = max(1, round(rate * n))``: the adaptive threshold's rank
(:class:`~alscout.runtime.temporal.AdaptiveThreshold`) over the whole set. Shipped with
the model, it lets a stream flag at the target rate from its first frame
(docs/temporal.md, "Shipped thresholds").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

import numpy as np

from alscout.errors import InvalidInputError
from alscout.runtime.temporal.decision import Reason, SelectorConfig
from alscout.runtime.temporal.online import flag_recording

__all__ = ["candidate_scores", "rate_thresholds"]


def candidate_scores(
    z: Iterable[float], config: SelectorConfig | None = None, gated: Iterable[bool] | None = None
) -> np.ndarray:
    """Smoothed scores of the frames of one recording that the rule could flag.

    Runs the streaming rule with no threshold, no budget and no earlier uploads (with
    ``config``'s dt, sigma and dt1), so a frame comes back when it is a local maximum
    of the smoothed score and not ``gated``.

    Args:
        z: raw image scores ``[T]`` of consecutive frames.
        config: the selector settings the thresholds will be used with.
        gated: ``[T]`` bool, frames the quality gate held back.

    Returns:
        ``[C]`` float64 smoothed scores of the candidates, in frame order.
    """
    base = config or SelectorConfig()
    open_rule = dataclasses.replace(
        base,
        threshold=-math.inf,
        initial_threshold=None,
        max_flags=None,
        per_frames=None,
    )
    decisions = flag_recording(np.asarray(z, np.float64), open_rule, gated=gated)
    return np.asarray([d.smoothed for d in decisions if d.reason is Reason.FLAGGED], np.float64)


def rate_thresholds(
    candidates: np.ndarray, n_frames: int, rates: Sequence[float]
) -> list[tuple[float, float]]:
    """``(rate, threshold)`` for each target rate, by increasing rate.

    The threshold is the midpoint of the k-th and (k+1)-th largest candidate scores
    (``k = max(1, round(rate * n_frames))``, halves up), so exactly k candidates of the
    calibration set reach it (ties aside) and it sits away from both; with k candidates
    or fewer, the smallest candidate (every candidate is flagged: the set has fewer
    local maxima than the rate asks for).

    Raises:
        InvalidInputError: no candidates, ``n_frames < 1``, or a rate outside (0, 1].
    """
    scores = np.sort(np.asarray(candidates, np.float64))[::-1]
    if n_frames < 1 or scores.size == 0:
        raise InvalidInputError(
            f"cannot calibrate on {n_frames} frames with {scores.size} candidates: score "
            "a longer calibration set"
        )
    if not np.isfinite(scores).all():
        raise InvalidInputError("candidate scores must be finite")
    out = []
    for rate in sorted({float(r) for r in rates}):
        if not 0.0 < rate <= 1.0:
            raise InvalidInputError(f"target rates must be in (0, 1], got {rate}")
        k = max(1, math.floor(rate * n_frames + 0.5))
        if k >= scores.size:
            threshold = float(scores[-1])
        else:
            threshold = float(0.5 * (scores[k - 1] + scores[k]))
        out.append((rate, threshold))
    return out
