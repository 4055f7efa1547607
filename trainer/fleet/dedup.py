"""Near-duplicate frames across vehicles: perceptual hashes and bit-sampling LSH.

Each frame gets a 64-bit DCT perceptual hash (``imagehash.phash``); two frames are
near-duplicates when their hashes differ in at most ``max_distance`` bits (Hamming
distance). :class:`NearDuplicateIndex` finds them without comparing every pair:
it samples the hash's bits into ``m`` *disjoint* groups (a seeded permutation of
the 64 positions, cut into groups) and keeps one hash table per group, keyed by the
group's bits. Two hashes within ``d = max_distance`` bits differ in at most
``r = d // m`` bits of at least one group (pigeonhole), so a query probes, in every
table, its own key and every key within ``r`` bits of it, and finds them all:
the index returns exactly what a brute-force scan returns
(:func:`naive_near_duplicates`, tested). This is multi-index hashing (Norouzi,
Punjani and Fleet, CVPR 2012); with ``m = d + 1`` groups it is plain bit-sampling
LSH with one probe per table. Few wide groups keep buckets small (few candidates
per query) at the price of more probes.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Hashable, Iterable
from itertools import combinations
from typing import Generic, TypeVar

import numpy as np

from alscout.errors import ConfigError, InvalidInputError

__all__ = [
    "HASH_BITS",
    "perceptual_hash",
    "hamming",
    "NearDuplicateIndex",
    "naive_near_duplicates",
]

log = logging.getLogger(__name__)

_Key = TypeVar("_Key", bound=Hashable)

#: bits of :func:`perceptual_hash` (an 8 x 8 DCT hash)
HASH_BITS = 64
#: most keys one query may probe in one table
MAX_PROBES = 100_000


def perceptual_hash(image: np.ndarray) -> int:
    """The 64-bit DCT perceptual hash of an image, as an ``int`` in ``[0, 2**64)``.

    ``image``: ``[H, W, 3]`` uint8 RGB or ``[H, W]`` uint8 grey, any size. Resizing,
    recompression and small brightness changes move a few bits; different scenes
    differ in about half of them.
    """
    import imagehash
    from PIL import Image

    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or min(array.shape[:2]) < 1:
        raise InvalidInputError(
            f"perceptual_hash needs a uint8 [H, W] or [H, W, 3] image, got "
            f"{array.dtype} {array.shape}"
        )
    if array.ndim == 3 and array.shape[2] != 3:
        raise InvalidInputError(f"perceptual_hash needs 3 channels, got {array.shape[2]}")
    bits = imagehash.phash(Image.fromarray(array), hash_size=8).hash.ravel()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def hamming(a: int, b: int) -> int:
    """Number of differing bits of two hashes."""
    return (a ^ b).bit_count()


def _check_hash(value: int) -> int:
    if not isinstance(value, int | np.integer) or not 0 <= int(value) < 1 << HASH_BITS:
        raise InvalidInputError(f"a hash must be an int in [0, 2**{HASH_BITS}), got {value!r}")
    return int(value)


class NearDuplicateIndex(Generic[_Key]):
    """Hashes with keys; :meth:`query` returns every stored key within ``max_distance``.

    ``max_distance``: largest Hamming distance (bits of 64) that counts as a
    near-duplicate, 0..31. ``groups``: tables, 1..``max_distance + 1`` (default:
    ``ceil((max_distance + 1) / 3)``, so that each table is probed within 2 bits: 3
    tables of 21-22 bit keys for the default distance 8). ``seed``: which bits go into which
    table (any seed gives exact results; it only changes the bucket loads).
    """

    def __init__(self, max_distance: int = 8, *, groups: int | None = None, seed: int = 0) -> None:
        if not isinstance(max_distance, int) or not 0 <= max_distance < HASH_BITS // 2:
            raise ConfigError(f"max_distance must be an int in 0..31 bits, got {max_distance!r}")
        groups = -(-(max_distance + 1) // 3) if groups is None else groups
        if not isinstance(groups, int) or not 1 <= groups <= max_distance + 1:
            raise ConfigError(f"groups must be an int in 1..{max_distance + 1}, got {groups!r}")
        self.max_distance = max_distance
        self.radius = max_distance // groups
        order = np.random.default_rng(seed).permutation(HASH_BITS)
        bit_groups = [[int(b) for b in group] for group in np.array_split(order, groups)]
        width = max(len(group) for group in bit_groups)
        probes = sum(math.comb(width, k) for k in range(self.radius + 1))
        if probes > MAX_PROBES:
            raise ConfigError(
                f"{groups} groups for max_distance {max_distance} need {probes} probes per "
                f"table (more than {MAX_PROBES}); use more groups"
            )
        self._masks = [sum(1 << b for b in group) for group in bit_groups]
        self._probes = [_flips(group, self.radius) for group in bit_groups]
        self._tables: list[dict[int, list[int]]] = [defaultdict(list) for _ in bit_groups]
        self._keys: list[_Key] = []
        self._hashes: list[int] = []

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: _Key, value: int) -> None:
        """Store ``value`` (a 64-bit hash) under ``key``; keys may repeat."""
        value = _check_hash(value)
        slot = len(self._keys)
        self._keys.append(key)
        self._hashes.append(value)
        for mask, table in zip(self._masks, self._tables, strict=True):
            table[value & mask].append(slot)

    def _near(self, value: int) -> list[tuple[int, int]]:
        """``(distance, slot)`` of every stored hash within ``max_distance``, sorted."""
        candidates: set[int] = set()
        for mask, probes, table in zip(self._masks, self._probes, self._tables, strict=True):
            key = value & mask
            for flip in probes:
                bucket = table.get(key ^ flip)
                if bucket:
                    candidates.update(bucket)
        found = []
        for slot in candidates:
            distance = hamming(value, self._hashes[slot])
            if distance <= self.max_distance:
                found.append((distance, slot))
        found.sort()
        return found

    def query(self, value: int) -> list[tuple[_Key, int]]:
        """Every ``(key, distance)`` within ``max_distance`` of ``value``, nearest first
        (ties: the earlier added first)."""
        return [(self._keys[slot], distance) for distance, slot in self._near(_check_hash(value))]

    def nearest(self, value: int) -> tuple[_Key, int] | None:
        """The closest stored ``(key, distance)`` within ``max_distance``, or None."""
        hits = self.query(value)
        return hits[0] if hits else None

    def pairs(self) -> list[tuple[int, int, int]]:
        """Every near-duplicate pair ``(i, j, distance)``, ``i < j`` in insertion order."""
        found: list[tuple[int, int, int]] = []
        for i, value in enumerate(self._hashes):
            found.extend((i, j, distance) for distance, j in self._near(value) if j > i)
        return sorted(found)


def _flips(bits: list[int], radius: int) -> list[int]:
    """XOR masks of every subset of ``bits`` with at most ``radius`` members (0 first)."""
    masks = [0]
    for size in range(1, radius + 1):
        masks.extend(sum(1 << b for b in subset) for subset in combinations(bits, size))
    return masks


def naive_near_duplicates(hashes: Iterable[int], max_distance: int) -> list[tuple[int, int, int]]:
    """Brute force: every pair ``(i, j, distance)``, ``i < j``, within ``max_distance``."""
    values = [_check_hash(v) for v in hashes]
    return [
        (i, j, hamming(values[i], values[j]))
        for i in range(len(values))
        for j in range(i + 1, len(values))
        if hamming(values[i], values[j]) <= max_distance
    ]
