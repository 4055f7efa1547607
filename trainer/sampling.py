"""Weighted sampling of a training set made of several sources, seeded per epoch.

``alscout train --data A --weight 2 --data B`` concatenates the sources and gives each
image its source's weight. Weight ``w`` means "as if the source were listed ``w``
times": per epoch an image of weight ``w`` appears ``floor(w)`` times, and of the
images sharing a weight, exactly ``round(frac(w) * n)`` (drawn without replacement)
appear once more. So weight 1 everywhere is one pass over the data, 2 is every image
twice, 0.5 is a different half of the source each epoch, and the share of each source
is exact, not merely expected. An epoch has ``sum over sources of round(w * n)``
images (up to rounding), in a random order.

The draws depend on ``(seed, epoch)`` alone, so a resumed run repeats them; like
:class:`DistributedSampler`, the epoch's list is padded to a multiple of the number
of processes and process ``r`` takes every ``W``-th entry from ``r``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data.distributed import DistributedSampler

from alscout.errors import ConfigError

__all__ = ["check_weights", "weighted_epoch", "WeightedSampler"]


def check_weights(weights: Sequence[float], size: int) -> np.ndarray:
    """``weights`` as a ``[size]`` float64 array; ConfigError unless all finite and > 0."""
    values = np.asarray(weights, dtype=np.float64)
    if values.shape != (size,):
        raise ConfigError(f"need one weight per image ({size}), got shape {values.shape}")
    if not np.all(np.isfinite(values) & (values > 0)):
        raise ConfigError("sampling weights must be finite and > 0")
    return values


def weighted_epoch(weights: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """Image indices of one epoch (see the module docstring), shuffled. ``[L]`` int64."""
    rng = np.random.default_rng([seed, epoch, 2])
    parts = []
    for weight in np.unique(weights):  # sorted: the draws do not depend on image order
        members = np.flatnonzero(weights == weight)
        whole = math.floor(weight)
        fraction = float(weight) - whole
        parts.append(np.tile(members, whole))
        extra = round(fraction * members.size)
        parts.append(np.sort(rng.choice(members, size=extra, replace=False)))
    indices = np.concatenate(parts).astype(np.int64)
    return indices[rng.permutation(indices.size)]


class WeightedSampler(DistributedSampler):
    """A :class:`DistributedSampler` whose epochs follow :func:`weighted_epoch`.

    ``weights``: ``[len(dataset)]``, one per image. ``set_epoch`` chooses the epoch.
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        weights: Sequence[float],
        num_replicas: int,
        rank: int,
        seed: int,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.weights = check_weights(weights, len(self.dataset))  # type: ignore[arg-type]
        length = weighted_epoch(self.weights, seed, 0).size
        if length < 1:
            raise ConfigError("the sampling weights give an empty epoch; raise them")
        self.num_samples = math.ceil(length / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        indices = weighted_epoch(self.weights, self.seed, self.epoch)
        padding = self.total_size - indices.size
        if padding:
            indices = np.concatenate([indices, np.resize(indices, padding)])
        return iter(indices[self.rank : self.total_size : self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
