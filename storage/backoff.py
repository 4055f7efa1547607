"""The one retry delay policy: exponential backoff with full jitter.

Used by the uploader (sink errors), the fleet's S3 reader (throttling) and the gRPC
clients (reconnects). Full jitter spreads a fleet of retrying cars over the whole
window instead of letting them retry in lock step.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Backoff"]


class Backoff:
    """Delays drawn uniformly from ``[0, min(cap_s, base_s * 2**attempt)]``.

    ``rng``: a seeded generator (tests replay the same delays); default a fresh one.
    """

    def __init__(self, base_s: float, cap_s: float, rng: np.random.Generator | None = None) -> None:
        if base_s < 0 or cap_s < 0:
            raise ValueError(f"backoff needs base_s, cap_s >= 0, got {base_s}, {cap_s}")
        self.base_s = base_s
        self.cap_s = cap_s
        self.rng = rng if rng is not None else np.random.default_rng()

    def delay(self, attempt: int) -> float:
        """Seconds to wait after ``attempt`` + 1 consecutive failures (attempt >= 0)."""
        return float(self.rng.uniform(0.0, min(self.cap_s, self.base_s * 2.0 ** min(attempt, 60))))
