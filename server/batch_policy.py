"""How big the server's inference batches get, and how long it waits to fill one, per backend.

Batching across streams pays on a GPU, where a batch of 8 frames costs little more
than one; on a CPU it does not: the detector's convolutions already keep the cores busy
at one frame (its frame and mirror), a batch of 8 scored fewer frames per second than
a batch of 1 (bench/cpu_limit.py and docs/runtime.md have the figures), and a frame
waiting for others only adds latency. :func:`choose_batch_policy` picks by the kind of
device the backend runs on:

- **cpu** (``onnxruntime-cpu``, ``torch``): ``max_batch`` 1, ``max_delay_ms`` 0.
- **gpu** (``onnxruntime-cuda``, ``onnxruntime-tensorrt``, ``tensorrt``): ``max_batch``
  8 (16 images with the mirrors: the engines' tuned profile), ``max_delay_ms`` 5.

The server's own settings win: a ``max_batch`` it was given (flag, file or
environment) replaces the policy's batch and its ``max_delay_ms`` the policy's delay,
and the log says which value came from where. :func:`best_batch` is the rule the
table was made with, for a benchmark to apply to its own measurements.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from alscout.errors import ConfigError

__all__ = [
    "BatchPolicy",
    "DEVICE_POLICIES",
    "DEFAULT_MAX_DELAY_MS",
    "device_kind",
    "choose_batch_policy",
    "best_batch",
]

log = logging.getLogger(__name__)

#: ``ServerConfig.max_delay_ms``'s default: a delay equal to it is taken as not set
DEFAULT_MAX_DELAY_MS = 5.0
#: a larger batch must score this much faster per frame to be worth the wait
MIN_GAIN = 0.10


@dataclass(frozen=True)
class BatchPolicy:
    """``max_batch`` frames per inference batch across streams, formed within
    ``max_delay_ms`` of its first frame; ``reason``: why, for the log."""

    max_batch: int
    max_delay_ms: float
    reason: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int):
            raise ConfigError(f"max_batch must be an integer, got {self.max_batch!r}")
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {self.max_batch}")
        if not self.max_delay_ms >= 0:  # also refuses NaN
            raise ConfigError(f"max_delay_ms must be >= 0, got {self.max_delay_ms}")


#: device kind -> the policy measured for it (docs/runtime.md, "Batch policy")
DEVICE_POLICIES: Mapping[str, BatchPolicy] = {
    "cpu": BatchPolicy(
        1,
        0.0,
        "on CPUs a batch of 8 scored fewer frames/s than a batch of 1 "
        "(bench/cpu_limit.py), so frames are not held back to batch them",
    ),
    "gpu": BatchPolicy(
        8,
        DEFAULT_MAX_DELAY_MS,
        "on GPUs a batch of 8 frames (16 images with mirrors, the engines' tuned "
        "profile) costs little more than one",
    ),
}


def device_kind(backend_name: str) -> str:
    """``"cpu"`` or ``"gpu"`` for a backend registry name (``onnxruntime-cpu``, ...)."""
    if backend_name in ("onnxruntime-cpu", "torch"):
        return "cpu"
    if backend_name in ("onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt"):
        return "gpu"
    raise ConfigError(f"no batch policy for backend {backend_name!r}")


def choose_batch_policy(
    backend_name: str,
    *,
    max_batch: int | None = None,
    max_delay_ms: float = DEFAULT_MAX_DELAY_MS,
) -> BatchPolicy:
    """The batching for a server whose model runs on ``backend_name``.

    ``max_batch``: the server's setting (None: not set, the policy's applies).
    ``max_delay_ms``: the server's setting; a value other than
    :data:`DEFAULT_MAX_DELAY_MS` replaces the policy's delay, and with ``max_batch`` set
    it applies whatever its value. Logs the choice and its reason.
    """
    kind = device_kind(backend_name)
    policy = DEVICE_POLICIES[kind]
    reasons = []
    if max_batch is None:
        batch = policy.max_batch
        reasons.append(f"max_batch={batch} from the {kind} policy: {policy.reason}")
    else:
        batch = max_batch
        reasons.append(f"max_batch={batch} configured (the {kind} policy says {policy.max_batch})")
    if max_batch is not None or max_delay_ms != DEFAULT_MAX_DELAY_MS:
        delay = float(max_delay_ms)
        reasons.append(f"max_delay_ms={delay:g} configured")
    else:
        delay = policy.max_delay_ms
        reasons.append(f"max_delay_ms={delay:g} from the {kind} policy")
    chosen = BatchPolicy(batch, delay, "; ".join(reasons))
    log.info(
        "batch policy backend=%s max_batch=%d max_delay_ms=%g why=%s",
        backend_name,
        chosen.max_batch,
        chosen.max_delay_ms,
        chosen.reason,
    )
    return chosen


def best_batch(frames_per_s: Mapping[int, float], min_gain: float = MIN_GAIN) -> int:
    """The batch size to serve with, from measured frames/s per batch size.

    From the smallest batch up, a larger one replaces the choice only when it scores
    more than ``min_gain`` (a share: 0.10 = 10 %) more frames/s: waiting for frames to
    fill a batch costs latency, so it must buy clearly more throughput.
    """
    if not frames_per_s:
        raise ConfigError("best_batch needs at least one measured batch size")
    sizes = sorted(frames_per_s)
    if sizes[0] < 1 or not all(frames_per_s[b] > 0 for b in sizes):
        raise ConfigError(f"batch sizes must be >= 1 with frames/s > 0, got {frames_per_s}")
    chosen = sizes[0]
    for size in sizes[1:]:
        if frames_per_s[size] > frames_per_s[chosen] * (1.0 + min_gain):
            chosen = size
    return chosen
