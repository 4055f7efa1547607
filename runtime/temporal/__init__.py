"""Temporal selection of video frames (SPEC §2): smoothing, per-cycle and streaming choice.

- :func:`smooth`: Gaussian smoothing of image-level scores (eq. 6).
- :func:`select_top`, :func:`select_video`, :func:`select_random`,
  :func:`select_guided_random`: offline selection once per active-learning cycle (§2a).
- :class:`OnlineSelector` (``push`` / ``finish``) and :func:`flag_recording`: the
  streaming rule on the vehicle and its whole-recording driver (§2b).
- :func:`candidate_scores`, :func:`rate_thresholds`: thresholds for target flag rates,
  calibrated once and shipped with the model.
"""

from __future__ import annotations

from alscout.runtime.temporal.calibration import candidate_scores, rate_thresholds
from alscout.runtime.temporal.decision import Decision, Reason, SelectorConfig
from alscout.runtime.temporal.offline import (
    select_guided_random,
    select_random,
    select_top,
    select_video,
)
from alscout.runtime.temporal.online import OnlineSelector, flag_recording
from alscout.runtime.temporal.quantile import AdaptiveThreshold
from alscout.runtime.temporal.smoothing import gaussian_weights, smooth

__all__ = [
    "smooth",
    "gaussian_weights",
    "select_top",
    "select_video",
    "select_random",
    "select_guided_random",
    "OnlineSelector",
    "flag_recording",
    "Decision",
    "Reason",
    "SelectorConfig",
    "AdaptiveThreshold",
    "candidate_scores",
    "rate_thresholds",
]
