"""Near-duplicate frames across vehicles: perceptual hashes and bit-sampling LSH.

Each frame gets a 64-bit DCT perceptual hash (``imagehash.phash``); two frames are
near-duplicates when their hashes differ in at most ``max_distance`` bits (Hamming
distance). :class:`NearDuplicateIndex` finds them without comparing every pair:
it samples the hash's bits into ``max_distance + 1`` *disjoint* groups (a seeded
permutation of the 64 positions, cut into groups) and keeps one hash table per
group. Two hashes within ``max_distance`` bits differ in at most ``max_distance``
groups, so by the pigeonhole principle they agree on at least one group and meet
in that table: the index returns exactly what a brute-force scan returns
(:func:`naive_near_duplicates`, tested), while a query only looks at the hashes
that share a bucket with it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Hashable, Iterable

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

#: bits of :func:`perceptual_hash` (an 8 x 8 DCT hash)
HASH_BITS = 64


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


class NearDuplicateIndex:
    """Hashes with keys; :meth:`query` returns every stored key within ``max_distance``.

    ``max_distance``: largest Hamming distance (bits of 64) that counts as a
    near-duplicate, 0..31. ``seed``: which bits go into which table (any seed gives
    exact results; it only changes the bucket loads).
    """

    def __init__(self, max_distance: int = 8, *, seed: int = 0) -> None:
        if not isinstance(max_distance, int) or not 0 <= max_distance < HASH_BITS // 2:
            raise ConfigError(f"max_distance must be an int in 0..31 bits, got {max_distance!r}")
        self.max_distance = max_distance
        order = np.random.default_rng(seed).permutation(HASH_BITS)
        groups = np.array_split(order, max_distance + 1)
        self._masks = [sum(1 << int(bit) for bit in group) for group in groups]
        self._tables: list[dict[int, list[int]]] = [defaultdict(list) for _ in groups]
        self._keys: list[Hashable] = []
        self._hashes: list[int] = []

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: Hashable, value: int) -> None:
        """Store ``value`` (a 64-bit hash) under ``key``; keys may repeat."""
        value = _check_hash(value)
        slot = len(self._keys)
        self._keys.append(key)
        self._hashes.append(value)
        for mask, table in zip(self._masks, self._tables, strict=True):
            table[value & mask].append(slot)

    def query(self, value: int) -> list[tuple[Hashable, int]]:
        """Every ``(key, distance)`` within ``max_distance`` of ``value``, nearest first
        (ties: the earlier added first)."""
        value = _check_hash(value)
        candidates: set[int] = set()
        for mask, table in zip(self._masks, self._tables, strict=True):
            candidates.update(table.get(value & mask, ()))
        found = []
        for slot in candidates:
            distance = hamming(value, self._hashes[slot])
            if distance <= self.max_distance:
                found.append((distance, slot))
        found.sort()
        return [(self._keys[slot], distance) for distance, slot in found]

    def nearest(self, value: int) -> tuple[Hashable, int] | None:
        """The closest stored ``(key, distance)`` within ``max_distance``, or None."""
        hits = self.query(value)
        return hits[0] if hits else None

    def pairs(self) -> list[tuple[int, int, int]]:
        """Every near-duplicate pair ``(i, j, distance)``, ``i < j`` in insertion order."""
        found: set[tuple[int, int, int]] = set()
        for table in self._tables:
            for slots in table.values():
                for a in range(len(slots)):
                    for b in range(a + 1, len(slots)):
                        i, j = slots[a], slots[b]
                        distance = hamming(self._hashes[i], self._hashes[j])
                        if distance <= self.max_distance:
                            found.add((i, j, distance))
        return sorted(found)


def naive_near_duplicates(hashes: Iterable[int], max_distance: int) -> list[tuple[int, int, int]]:
    """Brute force: every pair ``(i, j, distance)``, ``i < j``, within ``max_distance``."""
    values = [_check_hash(v) for v in hashes]
    return [
        (i, j, hamming(values[i], values[j]))
        for i in range(len(values))
        for j in range(i + 1, len(values))
        if hamming(values[i], values[j]) <= max_distance
    ]
