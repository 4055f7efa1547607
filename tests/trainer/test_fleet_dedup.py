from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scenes import scene

from alscout.errors import ConfigError, InvalidInputError
from alscout.trainer.fleet.dedup import (
    NearDuplicateIndex,
    hamming,
    naive_near_duplicates,
    perceptual_hash,
)


def planted_hashes(rng: np.random.Generator, clusters: int, per_cluster: int, spread: int):
    """Random 64-bit centres, each with neighbours that flip 0..spread random bits."""
    hashes = []
    for _ in range(clusters):
        centre = int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2))
        hashes.append(centre)
        for _ in range(per_cluster):
            flips = rng.choice(64, size=int(rng.integers(0, spread + 1)), replace=False)
            hashes.append(centre ^ sum(1 << int(b) for b in flips))
    order = rng.permutation(len(hashes))
    return [hashes[i] for i in order]


@pytest.mark.parametrize(
    ("max_distance", "groups"),
    [(0, None), (3, None), (3, 4), (2, 1), (8, None), (8, 4), (8, 9), (12, None), (12, 5)],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_index_equals_brute_force(max_distance, groups, seed):
    rng = np.random.default_rng(seed)
    # neighbours spread past max_distance, so both sides of the boundary occur
    hashes = planted_hashes(rng, clusters=25, per_cluster=6, spread=max_distance + 4)
    index = NearDuplicateIndex(max_distance, groups=groups, seed=seed + 10)
    for i, value in enumerate(hashes):
        index.add(i, value)
    expected = naive_near_duplicates(hashes, max_distance)
    assert index.pairs() == expected
    assert any(d == max_distance for _, _, d in expected) or max_distance == 0
    for value in hashes:
        brute = sorted(
            (hamming(value, other), j)
            for j, other in enumerate(hashes)
            if hamming(value, other) <= max_distance
        )
        assert index.query(value) == [(j, d) for d, j in brute]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=30),
    st.integers(0, 20),
    st.integers(0, 5),
)
def test_query_of_flipped_bits_always_found(values, max_distance, seed):
    rng = np.random.default_rng(seed)
    index = NearDuplicateIndex(max_distance, seed=seed)
    for i, value in enumerate(values):
        index.add(i, value)
    for i, value in enumerate(values):
        flips = rng.choice(64, size=max_distance, replace=False)
        probe = value ^ sum(1 << int(b) for b in flips)
        assert i in [key for key, _ in index.query(probe)]
    assert index.pairs() == naive_near_duplicates(values, max_distance)


def test_nearest_and_empty():
    index = NearDuplicateIndex(4)
    assert index.nearest(123) is None
    index.add("far", 0b1111)
    index.add("near", 0b0001)
    assert index.nearest(0) == ("near", 1)
    assert index.query(0) == [("near", 1), ("far", 4)]
    assert len(index) == 2


def test_bad_arguments():
    with pytest.raises(ConfigError, match="max_distance"):
        NearDuplicateIndex(32)
    with pytest.raises(ConfigError, match="max_distance"):
        NearDuplicateIndex(-1)
    with pytest.raises(ConfigError, match=r"groups must be an int in 1\.\.3"):
        NearDuplicateIndex(2, groups=4)
    with pytest.raises(ConfigError, match="groups"):
        NearDuplicateIndex(2, groups=0)
    with pytest.raises(ConfigError, match="probes"):
        NearDuplicateIndex(8, groups=1)  # every key within 8 of 64 bits: billions
    assert NearDuplicateIndex(8).radius == 2 and NearDuplicateIndex(0).radius == 0
    index = NearDuplicateIndex(2)
    with pytest.raises(InvalidInputError, match="2\\*\\*64"):
        index.add("x", 2**64)
    with pytest.raises(InvalidInputError, match="2\\*\\*64"):
        index.query(-1)
    with pytest.raises(InvalidInputError, match="uint8"):
        perceptual_hash(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(InvalidInputError, match="channels"):
        perceptual_hash(np.zeros((8, 8, 4), np.uint8))


def test_perceptual_hash_is_robust_to_recompression_and_resizing():
    image = scene(0, 120, 160)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert ok
    recompressed = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    resized = cv2.resize(image, (320, 240), interpolation=cv2.INTER_LINEAR)
    brighter = np.clip(image.astype(np.int16) + 10, 0, 255).astype(np.uint8)
    base = perceptual_hash(image)
    assert 0 <= base < 2**64
    for variant in (recompressed, resized, brighter):
        assert hamming(base, perceptual_hash(variant)) <= 6
    others = [hamming(base, perceptual_hash(scene(s, 120, 160))) for s in range(1, 8)]
    assert min(others) > 12
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    assert hamming(base, perceptual_hash(grey)) <= 2
