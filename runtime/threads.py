"""How many threads inference, scoring and the server's workers get, decided together.

Three pools share the cores: ONNX Runtime's intra-op pool (or PyTorch's, in the
reference backend), Numba's (the scoring kernels) and the server's scoring workers.
Sized apart, each takes every core: the issue behind this module was Numba's pool and
torch's spinning against each other. :func:`plan_threads` sizes them for the cores
this process may run on (``os.sched_getaffinity``, which honours ``taskset`` and
container CPU sets, not ``os.cpu_count``):

- **inference** (``intra_op``): every core up to two, then every core but one: the
  spare core keeps the event loop, gRPC and JPEG decoding from stalling a batch.
- **scoring** (``numba``): as many as inference. A batch is inferred, then scored, in
  the same worker, so the two pools take turns rather than run side by side.
- **workers**: 2. The batcher runs one batch at a time (server/batching.py), so one
  worker infers and scores while the other stores flagged frames and loads a reloaded
  model; more workers would add threads, not throughput.

docs/runtime.md ("Threads") says why.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from alscout.errors import ConfigError

__all__ = ["ThreadPlan", "available_cores", "plan_threads", "apply_numba_threads"]

log = logging.getLogger(__name__)

#: scoring workers of the server: one batch in flight plus one for storing and reloads
WORKERS = 2


@dataclass(frozen=True)
class ThreadPlan:
    """Threads per pool for ``cores`` usable cores; validated on construction.

    ``intra_op``: ONNX Runtime (or PyTorch) intra-op threads; ``numba``: Numba's
    threads for the scoring kernels; ``workers``: the server's scoring workers.
    ``reason``: how the numbers were chosen, for the log.
    """

    cores: int
    intra_op: int
    numba: int
    workers: int = WORKERS
    reason: str = ""

    def __post_init__(self) -> None:
        for name in ("cores", "intra_op", "numba", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"thread plan: {name} must be an integer >= 1, got {value!r}")

    def describe(self) -> str:
        """e.g. ``cores=2 intra_op=2 numba=2 workers=2 (...)``."""
        text = (
            f"cores={self.cores} intra_op={self.intra_op} numba={self.numba} workers={self.workers}"
        )
        return f"{text} ({self.reason})" if self.reason else text


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform (macOS)
        return max(1, os.cpu_count() or 1)


def plan_threads(
    cores: int | None = None, *, inference: int = 0, workers: int = WORKERS
) -> ThreadPlan:
    """Size the pools for ``cores`` (default :func:`available_cores`).

    ``inference``: intra-op threads asked for explicitly (``alscout serve --threads``);
    0 lets the plan choose. Scoring follows inference, so a server told to infer on one
    thread also scores on one. ``workers``: the server's scoring workers (its
    ``workers`` setting; :data:`WORKERS` by default).
    """
    cores = available_cores() if cores is None else cores
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise ConfigError(f"cores must be an integer >= 1, got {cores!r}")
    if isinstance(inference, bool) or not isinstance(inference, int) or inference < 0:
        raise ConfigError(f"inference threads must be an integer >= 0, got {inference!r}")
    if inference:
        intra_op = inference
        reason = f"inference threads set to {inference}; scoring follows"
    elif cores <= 2:
        intra_op = cores
        reason = f"{cores} core(s): inference and scoring take turns on all of them"
    else:
        intra_op = cores - 1
        reason = f"{cores} cores: one left for the event loop, gRPC and decoding"
    numba = min(intra_op, _numba_ceiling())
    return ThreadPlan(cores, intra_op, numba, workers, reason)


def apply_numba_threads(plan: ThreadPlan) -> None:
    """Set Numba's thread count for the calling thread to ``plan.numba``.

    Numba's setting is per thread: call this in every thread that scores (the server
    passes it as its worker pool's initializer).
    """
    import numba

    numba.set_num_threads(min(plan.numba, _numba_ceiling()))


def _numba_ceiling() -> int:
    """The most threads Numba launched (``NUMBA_NUM_THREADS``); it cannot use more."""
    from numba import config

    # numba.config sets its flags at import time through globals(): mypy cannot see them
    return max(1, int(config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
