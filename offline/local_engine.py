"""``--engine local``: worker processes on this machine, each holding one model.

A :class:`~concurrent.futures.ProcessPoolExecutor` of ``workers`` processes started
with ``spawn`` (no inherited threads or sessions); each loads the model once, in its
initializer, and then scores the units it is handed. At most two units per worker are
in flight. A worker that dies (killed, out of memory) breaks the pool: the driver
starts a new one and hands it again every unit not finished yet, up to ``restarts``
times, so a killed worker's recording is scored again from its start, never in part.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from alscout.errors import AlscoutError
from alscout.offline.engine import OnFailure, OnResult
from alscout.offline.plan import RecordingUnit
from alscout.offline.scorer import RecordingResult, RecordingScorer
from alscout.offline.settings import ScoreSettings

__all__ = ["LocalEngine"]

log = logging.getLogger(__name__)

#: the worker process's scorer, set by its initializer (one per process, by design)
_scorer: RecordingScorer | None = None


def _start_worker(settings: ScoreSettings) -> None:
    global _scorer
    logging.basicConfig(level=logging.WARNING)
    _scorer = RecordingScorer(settings)


def _score(unit: RecordingUnit) -> RecordingResult:
    assert _scorer is not None, "worker not initialised"
    return _scorer.score(unit)


class LocalEngine:
    """``workers`` processes on this machine (see the module)."""

    name = "local"

    def __init__(self, workers: int, *, restarts: int = 2) -> None:
        if workers < 1:
            raise AlscoutError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        self.restarts = restarts

    def run(
        self,
        units: Sequence[RecordingUnit],
        settings: ScoreSettings,
        on_result: OnResult,
        on_failure: OnFailure,
    ) -> None:
        if settings.threads == 0:  # share the cores out among the workers
            settings = settings.with_threads(max(1, (os.cpu_count() or 1) // self.workers))
        todo = list(units)
        for attempt in range(self.restarts + 1):
            todo = self._run_pool(todo, settings, on_result, on_failure)
            if not todo:
                return
            if attempt < self.restarts:
                log.warning(
                    "a worker process died: starting new workers for %d recordings", len(todo)
                )
        for unit in todo:
            on_failure(unit, f"worker processes died {self.restarts + 1} times while scoring it")

    def _run_pool(
        self,
        units: list[RecordingUnit],
        settings: ScoreSettings,
        on_result: OnResult,
        on_failure: OnFailure,
    ) -> list[RecordingUnit]:
        """Score ``units`` in one pool; returns the units left when a worker died."""
        context = multiprocessing.get_context("spawn")
        queue = list(reversed(units))
        running: dict[Future[RecordingResult], RecordingUnit] = {}
        with ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_start_worker, initargs=(settings,)
        ) as pool:
            while queue or running:
                broken = False
                while queue and len(running) < 2 * self.workers:
                    try:  # a worker may die between the last wait and this submit
                        future = pool.submit(_score, queue[-1])
                    except BrokenProcessPool:
                        broken = True
                        break
                    running[future] = queue.pop()
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    unit = running[future]
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        broken = True
                        continue  # stays in running: handed to the next pool
                    except AlscoutError as error:
                        on_failure(unit, str(error))
                    except Exception as error:  # one recording's bug: the others go on
                        log.exception("scoring failed source=%s", unit.source)
                        on_failure(unit, f"{type(error).__name__}: {error}")
                    else:
                        on_result(unit, result)
                    del running[future]
                if broken:
                    left = set(running.values()) | set(queue)
                    return [unit for unit in units if unit in left]
        return []
