"""What the streaming selector is configured with and what it answers (SPEC §2b)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from alscout.errors import ConfigError
from alscout.runtime.temporal._checks import check_count, check_sigma

__all__ = ["Reason", "Decision", "SelectorConfig"]


class Reason(StrEnum):
    """Why a frame was or was not flagged; compares equal to its string value."""

    FLAGGED = "flagged"
    #: the quality gate held the frame back (blurred, dark, overexposed or covered)
    LOW_QUALITY = "low_quality"
    #: adaptive threshold: fewer than ``min_history`` frames decided before this one
    WARMING_UP = "warming_up"
    BELOW_THRESHOLD = "below_threshold"
    #: a frame within dt1 has a larger smoothed score (or an equal one, earlier)
    NOT_LOCAL_MAX = "not_local_max"
    #: a frame within dt2 was uploaded from this recording in an earlier cycle
    NEAR_EARLIER_UPLOAD = "near_earlier_upload"
    #: max_flags flags already among the previous per_frames - 1 frames
    BUDGET = "budget"
    #: the rule flagged it, but the vehicle's outbox quota is held by higher scores (server)
    OUTBOX_FULL = "outbox_full"


@dataclass(frozen=True, slots=True)
class Decision:
    """The final decision for one frame; sent exactly once per frame, in frame order.

    Attributes:
        frame: the frame index.
        flagged: whether the frame is worth uploading for labeling.
        smoothed: its smoothed score ``zhat`` (eq. 6), same units as ``z``.
        z: its raw image-level score.
        threshold: the threshold in force for this frame (``nan`` while warming up
            without a shipped threshold, ``-inf`` when the adaptive window has fewer
            candidates than it asks for).
        reason: :class:`Reason`; ``"flagged"`` when flagged, else the first rule that
            failed, checked in the order low_quality, warming_up, below_threshold,
            not_local_max, near_earlier_upload, budget.
    """

    frame: int
    flagged: bool
    smoothed: float
    z: float
    threshold: float
    reason: Reason


@dataclass(frozen=True, slots=True)
class SelectorConfig:
    """Settings of one :class:`~alscout.runtime.temporal.OnlineSelector`, validated here.

    Attributes:
        dt: smoothing half-width, frames, >= 0.
        sigma: Gaussian width, frames, > 0.
        dt1: local-maximum half-window, frames, >= 0; two flags are > dt1 frames apart.
        dt2: half-window around earlier uploads that may not be flagged, frames, >= 0.
        threshold: a fixed threshold on ``zhat`` (any non-NaN number), or ``"adaptive"``.
        target_rate: adaptive only: wanted fraction of frames flagged, in (0, 1].
        history: adaptive only: window of decided frames the threshold is set over, >= 1.
        min_history: adaptive only: frames decided before the adaptive threshold takes
            over, 0..history; without ``initial_threshold`` nothing is flagged before.
        initial_threshold: adaptive only: the threshold in force until ``min_history``
            frames are decided (the model's shipped, calibrated threshold for
            ``target_rate``), or None (no flags while warming up).
        max_flags: at most this many flags in any ``per_frames`` consecutive frame indices
            (``None``: no budget); must come with ``per_frames``.
        per_frames: the budget's window, frames, >= 1.

    Raises:
        ConfigError (a ``ValueError``) naming the bad field.
    """

    dt: int = 5
    sigma: float = 2.5
    dt1: int = 15
    dt2: int = 2
    threshold: float | Literal["adaptive"] = 0.0
    target_rate: float = 0.01
    history: int = 9000
    min_history: int = 900
    initial_threshold: float | None = None
    max_flags: int | None = None
    per_frames: int | None = None

    def __post_init__(self) -> None:
        for name in ("dt", "dt1", "dt2", "history", "min_history"):
            minimum = 1 if name == "history" else 0
            object.__setattr__(
                self,
                name,
                check_count(name, getattr(self, name), minimum=minimum, error=ConfigError),
            )
        object.__setattr__(self, "sigma", check_sigma(self.sigma, error=ConfigError))
        if isinstance(self.threshold, str):
            if self.threshold != "adaptive":
                raise ConfigError(
                    f"threshold must be a number or 'adaptive', got {self.threshold!r}"
                )
        elif isinstance(self.threshold, bool) or not isinstance(self.threshold, numbers.Real):
            raise ConfigError(f"threshold must be a number or 'adaptive', got {self.threshold!r}")
        elif math.isnan(float(self.threshold)):
            raise ConfigError("threshold must not be NaN")
        else:
            object.__setattr__(self, "threshold", float(self.threshold))
        rate = self.target_rate
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 < rate <= 1.0:
            raise ConfigError(f"target_rate must be in (0, 1], got {rate!r}")
        object.__setattr__(self, "target_rate", float(rate))
        if self.initial_threshold is not None:
            value = self.initial_threshold
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ConfigError(f"initial_threshold must be a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise ConfigError(f"initial_threshold must be finite, got {value!r}")
            if self.threshold != "adaptive":
                raise ConfigError(
                    "initial_threshold is the adaptive threshold's start: set threshold = "
                    "'adaptive' with it, or drop it"
                )
            object.__setattr__(self, "initial_threshold", float(value))
        if self.min_history > self.history:
            raise ConfigError(
                f"min_history ({self.min_history}) must not exceed history ({self.history})"
            )
        if (self.max_flags is None) != (self.per_frames is None):
            raise ConfigError(
                "max_flags and per_frames go together: set both for a budget, or neither; "
                f"got max_flags={self.max_flags!r}, per_frames={self.per_frames!r}"
            )
        if self.max_flags is not None:
            object.__setattr__(
                self, "max_flags", check_count("max_flags", self.max_flags, error=ConfigError)
            )
            object.__setattr__(
                self,
                "per_frames",
                check_count("per_frames", self.per_frames, minimum=1, error=ConfigError),
            )

    @property
    def adaptive(self) -> bool:
        """Whether the threshold follows the stream (``threshold="adaptive"``)."""
        return self.threshold == "adaptive"

    @property
    def latency(self) -> int:
        """Frames between a frame's arrival and its final decision: ``dt + dt1``."""
        return self.dt + self.dt1
