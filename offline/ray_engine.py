"""``--engine ray``: Ray actors, each holding one model session (a GPU each when present).

Ray is optional (``pip install 'alscout[fleet]'``) and imported only here, only when
this engine runs. Without an address the engine starts a Ray instance on this machine
and stops it at the end; with one (``auto``, ``HOST:6379`` or ``ray://HOST:10001``) it
joins that cluster, and when Ray is already initialised in this process (a test, a
notebook) it uses that and leaves it running.

Each actor loads the model once: the model's bytes travel once through Ray's object
store (``ray.put``), so worker nodes need no copy of the file. An actor reserves
``threads`` CPUs (its inference threads) and, when the cluster has GPUs, one GPU.
Recordings go to the actors at most two at a time each (backpressure: an actor never
waits, the driver holds only unit descriptions, and results come back one recording at
a time). An actor whose process dies is restarted by Ray and its recording scored again
from its start (``max_restarts`` / ``max_task_retries``); a recording that fails after
that is reported failed and left for the next run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alscout.errors import AlscoutError, ConfigError
from alscout.files import write_atomic
from alscout.offline.engine import OnFailure, OnResult
from alscout.offline.plan import RecordingUnit
from alscout.offline.scorer import RecordingResult, RecordingScorer
from alscout.offline.settings import ScoreSettings
from alscout.runtime.model_info import file_sha256

__all__ = ["RayEngine", "ScorerActor", "require_ray"]

log = logging.getLogger(__name__)


def require_ray() -> Any:
    """The ``ray`` module, or a :class:`ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--engine ray needs Ray: pip install 'alscout[fleet]' (or use --engine local)"
        ) from None
    return ray


class ScorerActor:
    """What each Ray actor holds: one scorer, its model written to a local file.

    The file is ``<tmp>/alscout-model-<sha256>/<name>``: named by its content, written
    atomically, so the actors of a node share one copy and a later run reuses it.
    """

    def __init__(self, settings: ScoreSettings, model_name: str, model_bytes: bytes) -> None:
        digest = hashlib.sha256(model_bytes).hexdigest()
        folder = Path(tempfile.gettempdir()) / f"alscout-model-{digest}"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / model_name
        if not path.is_file() or file_sha256(path) != digest:
            write_atomic(path, model_bytes)
        self.scorer = RecordingScorer(dataclasses.replace(settings, model_path=path))

    def score(self, unit: RecordingUnit) -> RecordingResult:
        return self.scorer.score(unit)

    def worker(self) -> str:
        return self.scorer.worker


class RayEngine:
    """``workers`` Ray actors (see the module). ``workers`` 0: one per CPU of the cluster
    (divided by ``threads``), or one per GPU when it has GPUs."""

    name = "ray"

    def __init__(
        self,
        workers: int = 0,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        retries: int = 2,
    ) -> None:
        if workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {workers}")
        self.workers = workers
        self.address = address
        self.num_cpus = num_cpus
        self.retries = retries

    def run(
        self,
        units: Sequence[RecordingUnit],
        settings: ScoreSettings,
        on_result: OnResult,
        on_failure: OnFailure,
    ) -> None:
        ray = require_ray()
        started_here = not ray.is_initialized()
        if started_here:
            options: dict[str, Any] = {"logging_level": logging.WARNING}
            if self.address:
                options["address"] = self.address
            else:
                options["num_cpus"] = self.num_cpus or os.cpu_count() or 1
                options["include_dashboard"] = False
            ray.init(**options)
        try:
            self._run(ray, units, settings, on_result, on_failure)
        finally:
            if started_here:
                ray.shutdown()

    def _run(
        self,
        ray: Any,
        units: Sequence[RecordingUnit],
        settings: ScoreSettings,
        on_result: OnResult,
        on_failure: OnFailure,
    ) -> None:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        threads = settings.threads or 1
        workers = self.workers or (gpus or max(1, int(resources.get("CPU", 1)) // threads))
        self.workers = workers = min(workers, max(1, len(units)))
        actor_class = ray.remote(
            num_cpus=threads,
            num_gpus=1 if gpus >= workers else 0,
            max_restarts=self.retries,
            max_task_retries=self.retries,
        )(ScorerActor)
        model = ray.put(settings.model_path.read_bytes())
        settings = settings.with_threads(threads)
        actors = [
            actor_class.remote(settings, settings.model_path.name, model) for _ in range(workers)
        ]
        log.info("ray actors=%d gpus_per_actor=%d threads=%d", workers, gpus >= workers, threads)
        queue = list(reversed(units))
        running: dict[Any, tuple[RecordingUnit, int]] = {}
        load = [0] * workers
        while queue or running:
            for index in range(workers):
                while queue and load[index] < 2:
                    unit = queue.pop()
                    running[actors[index].score.remote(unit)] = (unit, index)
                    load[index] += 1
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                unit, index = running.pop(ref)
                load[index] -= 1
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as error:
                    cause = error.cause if isinstance(error.cause, AlscoutError) else error
                    on_failure(unit, str(cause).strip().splitlines()[-1])
                    continue
                except ray.exceptions.RayActorError as error:
                    on_failure(unit, f"its Ray actor died {self.retries + 1} times ({error})")
                    continue
                on_result(unit, result)
        for actor in actors:
            ray.kill(actor)
