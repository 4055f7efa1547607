"""A streaming threshold that flags a target fraction of frames (SPEC §2b, adaptive).

The selector can flag only local maxima of the smoothed score ("candidates"), and a
smoothed peak spans several frames, so a plain ``1 - target_rate`` quantile of every
frame's ``zhat`` would flag far fewer frames than asked. Instead the threshold is set
over the candidates of the last ``history`` decided frames: the k-th largest candidate
score with ``k = max(1, round(target_rate * n))`` and ``n`` the frames in the window,
so that ``target_rate * n`` candidates are at or above it. See docs/temporal.md.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

from alscout.errors import ConfigError

__all__ = ["AdaptiveThreshold"]


class AdaptiveThreshold:
    """The per-frame ``1 - target_rate`` quantile of candidate scores over a sliding window.

    A sorted list of the candidate scores in the window and a deque of the window's
    frames (``None`` for a frame that is not a candidate): O(log n) search, and an
    insert or removal that moves at most the window's candidates. Memory is bounded by
    ``history``.

    Args:
        target_rate: wanted fraction of frames at or above the threshold, in (0, 1].
        history: window length in decided frames, >= 1.
    """

    __slots__ = ("_sorted", "_window", "history", "target_rate")

    def __init__(self, target_rate: float, history: int) -> None:
        if isinstance(target_rate, bool) or not isinstance(target_rate, int | float):
            raise ConfigError(f"target_rate must be a number in (0, 1], got {target_rate!r}")
        if not (0.0 < float(target_rate) <= 1.0):
            raise ConfigError(f"target_rate must be in (0, 1], got {target_rate}")
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ConfigError(f"history must be an integer >= 1 frames, got {history!r}")
        self.target_rate = float(target_rate)
        self.history = history
        self._sorted: list[float] = []
        self._window: deque[float | None] = deque()

    @property
    def n_frames(self) -> int:
        """Frames in the window (at most ``history``)."""
        return len(self._window)

    @property
    def n_candidates(self) -> int:
        """Candidates in the window."""
        return len(self._sorted)

    def observe(self, score: float | None) -> None:
        """Add one decided frame: its smoothed score if it is a candidate, else ``None``."""
        if score is not None:
            bisect.insort(self._sorted, score)
        self._window.append(score)
        if len(self._window) > self.history:
            gone = self._window.popleft()
            if gone is not None:
                del self._sorted[bisect.bisect_left(self._sorted, gone)]

    def rank(self) -> int:
        """``k = max(1, round(target_rate * n))``, rounding halves up; 0 for an empty window."""
        if not self._window:
            return 0
        return max(1, math.floor(self.target_rate * len(self._window) + 0.5))

    def value(self) -> float:
        """The k-th largest candidate score; ``-inf`` when there are fewer than k candidates.

        ``-inf`` lets every candidate through: the stream has fewer local maxima than
        the rate asks for. An empty window also gives ``-inf``.
        """
        k = self.rank()
        if k == 0 or k > len(self._sorted):
            return -math.inf
        return self._sorted[-k]
