"""What the driver needs of an engine: hand units to workers, get results or failures back.

An engine calls ``on_result(unit, result)`` for every unit a worker finished and
``on_failure(unit, message)`` for every unit that could not be scored (a bad source, a
worker that died more often than the engine retries), from the driver's thread, in
completion order. It keeps a bounded number of units in flight (backpressure: a
worker never waits for work, and the driver never holds more than it needs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from alscout.offline.plan import RecordingUnit
from alscout.offline.scorer import RecordingResult
from alscout.offline.settings import ScoreSettings

__all__ = ["Engine", "OnResult", "OnFailure"]

OnResult = Callable[[RecordingUnit, RecordingResult], None]
OnFailure = Callable[[RecordingUnit, str], None]


class Engine(Protocol):
    """Runs score workers; ``workers`` of them."""

    name: str
    workers: int

    def run(
        self,
        units: Sequence[RecordingUnit],
        settings: ScoreSettings,
        on_result: OnResult,
        on_failure: OnFailure,
    ) -> None:
        """Score every unit; returns when each got a result or a failure."""
        ...
