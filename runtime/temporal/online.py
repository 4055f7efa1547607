"""Flagging frames one by one as they arrive, on the vehicle (SPEC §2b).

One implementation of the rule, :class:`OnlineSelector`, and two drivers: ``push`` /
``finish`` for a live stream and :func:`flag_recording` for a whole recording, which
simply drives the same class, so both give the same flags by construction.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
from collections import deque
from collections.abc import Iterable
from typing import Literal

import numpy as np

from alscout.errors import InvalidInputError
from alscout.runtime.temporal._checks import check_frame_index, check_frame_set, check_score
from alscout.runtime.temporal.decision import Decision, Reason, SelectorConfig
from alscout.runtime.temporal.quantile import AdaptiveThreshold
from alscout.runtime.temporal.smoothing import gaussian_weights

__all__ = ["OnlineSelector", "flag_recording"]

log = logging.getLogger(__name__)


class OnlineSelector:
    """Streaming flagger for one stream (one camera of one recording).

    Frame ``t`` gets its smoothed score once a frame with index >= ``t + dt`` has
    arrived, and its final decision once a frame with index >= ``t + dt + dt1`` has
    arrived (or at :meth:`finish`). It is flagged when ``zhat_t >= threshold``, ``zhat_t``
    is the largest smoothed score in ``[t - dt1, t + dt1]`` (strictly larger than every
    earlier frame there, >= every later one), no frame of ``earlier`` is within ``dt2``,
    and fewer than ``max_flags`` flags fall among the previous ``per_frames - 1`` frames.
    A frame pushed with ``gated=True`` (the quality gate held it back) is never flagged
    (reason ``low_quality``), is no candidate of the adaptive threshold and does not
    take part in the local-maximum test of its neighbours; its score is smoothed like
    any other (docs/temporal.md, "Quality gate").

    Frame indices must strictly increase; gaps are allowed (a missing frame does not
    exist: it has no weight in the smoothing, and windows are in frame-index units).
    Work per frame is O(dt + dt1); memory is O(dt + dt1 + max_flags + history).

    Args:
        dt, sigma, dt1, dt2, threshold, max_flags, per_frames: see :class:`SelectorConfig`.
        earlier: frames of this recording uploaded in an earlier cycle (indices >= 0).
        target_rate, history, min_history, initial_threshold: the adaptive threshold,
            see :class:`SelectorConfig` and :class:`AdaptiveThreshold`.
    """

    def __init__(
        self,
        dt: int = 5,
        sigma: float = 2.5,
        dt1: int = 15,
        dt2: int = 2,
        threshold: float | Literal["adaptive"] = 0.0,
        earlier: Iterable[int] = (),
        max_flags: int | None = None,
        per_frames: int | None = None,
        *,
        target_rate: float = 0.01,
        history: int = 9000,
        min_history: int = 900,
        initial_threshold: float | None = None,
    ) -> None:
        config = SelectorConfig(
            dt=dt,
            sigma=sigma,
            dt1=dt1,
            dt2=dt2,
            threshold=threshold,
            target_rate=target_rate,
            history=history,
            min_history=min_history,
            initial_threshold=initial_threshold,
            max_flags=max_flags,
            per_frames=per_frames,
        )
        self.config = config
        self._earlier: list[int] = check_frame_set("earlier", earlier).tolist()
        self._weights: list[float] = gaussian_weights(config.dt, config.sigma).tolist()
        self._adaptive = (
            AdaptiveThreshold(config.target_rate, config.history) if config.adaptive else None
        )
        # (frame, z, gated) of frames still needed for smoothing; the last _n_unsmoothed
        # lack zhat
        self._raw: deque[tuple[int, float, bool]] = deque()
        self._n_unsmoothed = 0
        # (frame, z, zhat, gated) of frames still needed for decisions; the last
        # _n_undecided wait
        self._smoothed: deque[tuple[int, float, float, bool]] = deque()
        self._n_undecided = 0
        self._recent_flags: deque[int] = deque()  # only kept under a budget
        self._last_frame: int | None = None
        self._n_decided = 0
        self._n_flagged = 0
        self._finished = False

    @classmethod
    def from_config(cls, config: SelectorConfig, earlier: Iterable[int] = ()) -> OnlineSelector:
        """A selector with the settings of ``config`` (validated once, reusable per stream)."""
        return cls(earlier=earlier, **dataclasses.asdict(config))

    @property
    def last_frame(self) -> int | None:
        """Index of the last frame pushed, or ``None`` before the first."""
        return self._last_frame

    @property
    def pending(self) -> int:
        """Frames pushed whose final decision has not been returned yet."""
        return self._n_unsmoothed + self._n_undecided

    @property
    def n_decided(self) -> int:
        """Frames with a final decision so far."""
        return self._n_decided

    @property
    def n_flagged(self) -> int:
        """Frames flagged so far."""
        return self._n_flagged

    @property
    def finished(self) -> bool:
        """Whether :meth:`finish` has been called."""
        return self._finished

    def push(self, frame_index: int, z: float, gated: bool = False) -> list[Decision]:
        """Add frame ``frame_index`` with image-level score ``z``; ``gated``: the quality
        gate held the frame back (it will not be flagged).

        Returns:
            The decisions that became final with this frame, in frame order: those for
            frames ``t`` with ``t + dt + dt1 <= frame_index`` not decided before.

        Raises:
            InvalidInputError (a ``ValueError``): a frame index that is not greater than
                the previous one (the message names both), a negative or non-integer
                index, a non-finite score, or a push after :meth:`finish`.
        """
        frame = check_frame_index(frame_index)
        score = check_score(frame, z)
        if self._finished:
            raise InvalidInputError(f"frame {frame} pushed after finish(): start a new selector")
        if self._last_frame is not None and frame <= self._last_frame:
            raise InvalidInputError(
                f"frame indices must strictly increase: frame {frame} pushed after "
                f"frame {self._last_frame}"
            )
        self._last_frame = frame
        self._raw.append((frame, score, bool(gated)))
        self._n_unsmoothed += 1
        self._smooth_up_to(frame - self.config.dt)
        return self._decide_up_to(frame - self.config.latency)

    def push_many(
        self,
        frame_indices: Iterable[int],
        z: Iterable[float],
        gated: Iterable[bool] | None = None,
    ) -> list[Decision]:
        """Push several frames in order; the same decisions as pushing them one by one.

        Args:
            frame_indices: ``[n]`` strictly increasing frame indices.
            z: ``[n]`` their scores.
            gated: ``[n]`` bool, frames the quality gate held back; default none.
        """
        frames = np.asarray(frame_indices)
        scores = np.asarray(z)
        held = np.zeros(frames.shape, bool) if gated is None else np.asarray(gated, bool)
        if frames.ndim != 1 or scores.shape != frames.shape or held.shape != frames.shape:
            raise InvalidInputError(
                f"frame_indices, z and gated must be 1-D of one length, got shapes "
                f"{frames.shape}, {scores.shape} and {held.shape}"
            )
        decisions: list[Decision] = []
        for frame, score, g in zip(frames.tolist(), scores.tolist(), held.tolist(), strict=True):
            decisions.extend(self.push(frame, score, g))
        return decisions

    def finish(self) -> list[Decision]:
        """End the stream: decide every pending frame (windows hold the frames that exist).

        Calling it again returns an empty list.
        """
        if self._finished:
            return []
        self._finished = True
        self._smooth_up_to(math.inf)
        decisions = self._decide_up_to(math.inf)
        log.debug(
            "stream finished frames=%d flagged=%d last_frame=%s",
            self._n_decided,
            self._n_flagged,
            self._last_frame,
        )
        return decisions

    def _smooth_up_to(self, limit: float) -> None:
        """Give ``zhat`` to every unsmoothed frame with index <= ``limit`` (eq. 6)."""
        raw, weights, dt = self._raw, self._weights, self.config.dt
        while self._n_unsmoothed:
            t, z_t, gated_t = raw[len(raw) - self._n_unsmoothed]
            if t > limit:
                break
            numerator = denominator = 0.0
            # In increasing frame order, like smooth(): the results are bit-identical.
            for s, z_s, _ in raw:
                if s < t - dt:
                    continue
                if s > t + dt:
                    break
                w = weights[abs(s - t)]
                numerator += w * z_s
                denominator += w
            self._smoothed.append((t, z_t, numerator / denominator, gated_t))
            self._n_undecided += 1
            self._n_unsmoothed -= 1
        # The next frame to smooth is the first unsmoothed one, or one not yet pushed.
        next_frame = raw[len(raw) - self._n_unsmoothed][0] if self._n_unsmoothed else None
        if next_frame is None:
            next_frame = (self._last_frame or 0) + 1
        while raw and raw[0][0] < next_frame - dt:
            raw.popleft()

    def _decide_up_to(self, limit: float) -> list[Decision]:
        """Final decisions, in frame order, for undecided frames with index <= ``limit``."""
        smoothed = self._smoothed
        decisions: list[Decision] = []
        while self._n_undecided:
            t, z_t, zhat_t, gated_t = smoothed[len(smoothed) - self._n_undecided]
            if t > limit:
                break
            decisions.append(self._decide(t, z_t, zhat_t, gated_t))
            self._n_undecided -= 1
        if decisions:
            keep_from = decisions[-1].frame + 1 - self.config.dt1
            while smoothed and smoothed[0][0] < keep_from:
                smoothed.popleft()
        return decisions

    def _decide(self, t: int, z_t: float, zhat_t: float, gated: bool) -> Decision:
        """Apply the rules to frame ``t``; every frame within dt1 is smoothed."""
        config = self.config
        local_max = not gated and self._is_local_max(t, zhat_t)
        if self._adaptive is not None:
            warming = self._n_decided < config.min_history
            if not warming:
                threshold = self._adaptive.value()
            elif config.initial_threshold is not None:  # the model's shipped threshold
                threshold, warming = config.initial_threshold, False
            else:
                threshold = math.nan
            self._adaptive.observe(zhat_t if local_max else None)
        else:
            warming = False
            threshold = config.threshold  # type: ignore[assignment]  # a float when fixed
        self._n_decided += 1
        if gated:
            reason = Reason.LOW_QUALITY
        elif warming:
            reason = Reason.WARMING_UP
        elif not zhat_t >= threshold:
            reason = Reason.BELOW_THRESHOLD
        elif not local_max:
            reason = Reason.NOT_LOCAL_MAX
        elif self._near_earlier(t):
            reason = Reason.NEAR_EARLIER_UPLOAD
        elif not self._budget_allows(t):
            reason = Reason.BUDGET
        else:
            reason = Reason.FLAGGED
            self._n_flagged += 1
            if config.max_flags is not None:
                self._recent_flags.append(t)
        return Decision(t, reason is Reason.FLAGGED, zhat_t, z_t, threshold, reason)

    def _is_local_max(self, t: int, zhat_t: float) -> bool:
        """``zhat_t`` beats every earlier frame within dt1 and ties or beats every later one."""
        dt1 = self.config.dt1
        for s, _, zhat_s, gated_s in self._smoothed:
            if s > t + dt1:
                break
            if s < t - dt1 or gated_s:  # a gated frame cannot be flagged: it blocks nothing
                continue
            if (s < t and zhat_s >= zhat_t) or (s > t and zhat_s > zhat_t):
                return False
        return True

    def _near_earlier(self, t: int) -> bool:
        """Whether a frame uploaded in an earlier cycle lies within dt2 of ``t``."""
        earlier = self._earlier
        i = bisect.bisect_left(earlier, t - self.config.dt2)
        return i < len(earlier) and earlier[i] <= t + self.config.dt2

    def _budget_allows(self, t: int) -> bool:
        """Fewer than max_flags flags among frames ``t - per_frames + 1 .. t - 1``."""
        config = self.config
        if config.max_flags is None or config.per_frames is None:
            return True
        recent = self._recent_flags
        while recent and recent[0] <= t - config.per_frames:
            recent.popleft()
        return len(recent) < config.max_flags


def flag_recording(
    z: Iterable[float],
    config: SelectorConfig | None = None,
    earlier: Iterable[int] = (),
    *,
    frames: Iterable[int] | None = None,
    gated: Iterable[bool] | None = None,
) -> list[Decision]:
    """The online rule over a whole recording at once: one :class:`Decision` per frame.

    Drives :class:`OnlineSelector` (push every frame, then finish), so the flags are
    the streaming run's by construction.

    Args:
        z: raw image-level scores ``[T]``.
        config: the selector's settings; default ``SelectorConfig()``.
        earlier: frames of this recording uploaded in an earlier cycle (indices >= 0).
        frames: frame indices ``[T]``, strictly increasing; default ``0..T-1``.
        gated: ``[T]`` bool, frames the quality gate held back; default none.

    Returns:
        ``T`` decisions in frame order.
    """
    scores = np.asarray(z)
    if scores.ndim != 1:
        raise InvalidInputError(f"z must be 1-D [T], got shape {scores.shape}")
    index = np.arange(scores.shape[0]) if frames is None else np.asarray(frames)
    selector = OnlineSelector.from_config(SelectorConfig() if config is None else config, earlier)
    decisions = selector.push_many(index, scores, gated)
    decisions.extend(selector.finish())
    return decisions
