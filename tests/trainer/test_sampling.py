"""Weighted multi-source sampling: exact shares, seeded per epoch, split like DDP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alscout.errors import ConfigError
from alscout.trainer.checkpoint import dataset_digest
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord
from alscout.trainer.distributed import DistContext, make_loader
from alscout.trainer.sampling import WeightedSampler, check_weights, weighted_epoch


class _Indices(torch.utils.data.Dataset):
    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return index


# Source A: images 0-9 at weight 2; B: 10-29 at 0.5; C: 30-32 at 1.
WEIGHTS = np.array([2.0] * 10 + [0.5] * 20 + [1.0] * 3)


def test_each_source_gets_exactly_its_weighted_share_every_epoch():
    seen = []
    for epoch in range(4):
        indices = weighted_epoch(WEIGHTS, seed=7, epoch=epoch)
        assert indices.size == 20 + 10 + 3
        counts = np.bincount(indices, minlength=WEIGHTS.size)
        assert (counts[:10] == 2).all()  # every image of A twice
        assert counts[10:30].sum() == 10 and counts[10:30].max() == 1  # half of B, no repeats
        assert (counts[30:] == 1).all()
        seen.append(counts[10:30].copy())
        np.testing.assert_array_equal(indices, weighted_epoch(WEIGHTS, seed=7, epoch=epoch))
    assert not all(np.array_equal(seen[0], s) for s in seen[1:])  # another half each epoch
    assert not np.array_equal(weighted_epoch(WEIGHTS, 7, 0), weighted_epoch(WEIGHTS, 8, 0))
    # Shares over a run: A 20/33, B 10/33, C 3/33 of the images drawn.
    many = np.concatenate([weighted_epoch(WEIGHTS, 0, e) for e in range(50)])
    shares = [np.isin(many, part).mean() for part in (range(10), range(10, 30), range(30, 33))]
    np.testing.assert_allclose(shares, [20 / 33, 10 / 33, 3 / 33])
    # In expectation each image of B is drawn every other epoch.
    np.testing.assert_allclose(np.bincount(many, minlength=33)[10:30] / 50, 0.5, atol=0.2)


def test_a_two_process_sampler_splits_the_one_process_epoch():
    data = _Indices(WEIGHTS.size)
    one = WeightedSampler(data, WEIGHTS, num_replicas=1, rank=0, seed=3)
    two = [WeightedSampler(data, WEIGHTS, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    for epoch in (0, 5):
        for sampler in (one, *two):
            sampler.set_epoch(epoch)
        single = list(one)
        assert len(single) == len(one) == 33
        assert len(two[0]) == len(two[1]) == 17  # padded to 34 like DistributedSampler
        merged = [i for pair in zip(*two, strict=True) for i in pair]
        assert merged[:33] == single and merged[33] == single[0]


def test_make_loader_switches_to_weights_and_keeps_the_plain_sampler_otherwise():
    data = _Indices(WEIGHTS.size)
    loader = make_loader(data, 4, DistContext(), True, seed=0, weights=WEIGHTS.tolist())
    assert isinstance(loader.sampler, WeightedSampler) and len(loader) == 9  # ceil(33 / 4)
    plain = make_loader(data, 4, DistContext(), True, seed=0, weights=[1.0] * 33)
    assert type(plain.sampler) is torch.utils.data.distributed.DistributedSampler


def test_weights_are_checked_and_count_in_the_data_digest():
    with pytest.raises(ConfigError, match="one weight per image"):
        check_weights([1.0, 2.0], 3)
    with pytest.raises(ConfigError, match="> 0"):
        check_weights([1.0, 0.0], 2)
    with pytest.raises(ConfigError, match="empty epoch"):
        WeightedSampler(_Indices(1), [0.1], 1, 0, 0)
    records = [ImageRecord(i, f"{i}.png", 64, 64, (Box(1, 1, 10, 20),)) for i in range(3)]
    data = Dataset(records)
    assert dataset_digest(data, [1.0] * 3) == dataset_digest(data)
    assert dataset_digest(data, [2.0, 1.0, 1.0]) != dataset_digest(data)
