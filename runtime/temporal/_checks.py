"""Argument checks shared by the temporal selectors: one message style everywhere."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable

import numpy as np

from alscout.errors import InvalidInputError

__all__ = [
    "check_count",
    "check_sigma",
    "check_scores",
    "check_frame_set",
    "check_frame_index",
    "check_score",
    "check_rng",
]


def check_count(
    name: str, value: object, *, minimum: int = 0, error: type = InvalidInputError
) -> int:
    """``value`` as an ``int`` >= ``minimum`` (bools and floats are refused)."""
    if isinstance(value, bool | np.bool_):
        raise error(f"{name} must be an integer, got the boolean {value!r}")
    try:
        # any object: operator.index's TypeError is the check
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise error(f"{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise error(f"{name} must be >= {minimum}, got {number}")
    return int(number)


def check_sigma(sigma: object, *, error: type = InvalidInputError) -> float:
    """The Gaussian width in frames: a finite real number > 0."""
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise error(f"sigma must be a real number of frames, got {sigma!r}")
    value = float(sigma)
    if not math.isfinite(value) or value <= 0.0:
        raise error(f"sigma must be finite and > 0 frames, got {value}")
    return value


def check_scores(z: object, name: str = "z") -> np.ndarray:
    """Image-level scores ``[T]`` as finite float64; wrong rank, NaN or inf is refused."""
    array = np.asarray(z)
    if array.ndim != 1:
        raise InvalidInputError(
            f"{name} must be a 1-D array of per-frame scores [T], got shape {array.shape}"
        )
    if array.size and not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise InvalidInputError(f"{name} must hold real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(
            f"{name} must be finite: {name}[{first}] = {array[first]} "
            f"({int(bad.sum())} non-finite values in all)"
        )
    return array


def check_frame_set(name: str, frames: Iterable[object], n_frames: int | None = None) -> np.ndarray:
    """Frame indices as a sorted unique int64 array; negative (or >= ``n_frames``) is refused."""
    array = np.asarray(list(frames) if not isinstance(frames, np.ndarray) else frames)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1:
        raise InvalidInputError(f"{name} must be a flat collection of frame indices")
    if not np.issubdtype(array.dtype, np.integer):
        raise InvalidInputError(f"{name} must hold integer frame indices, got dtype {array.dtype}")
    array = np.unique(array.astype(np.int64))
    if array[0] < 0:
        raise InvalidInputError(f"{name} holds the negative frame index {int(array[0])}")
    if n_frames is not None and array[-1] >= n_frames:
        raise InvalidInputError(
            f"{name} holds frame {int(array[-1])}, outside the recording's {n_frames} frames"
        )
    return array


def check_frame_index(frame: object) -> int:
    """One frame index of a stream: an ``int`` >= 0."""
    return check_count("frame index", frame, minimum=0)


def check_score(frame: int, z: object) -> float:
    """One frame's image-level score as a finite float."""
    if isinstance(z, bool) or not isinstance(z, numbers.Real):
        raise InvalidInputError(f"score of frame {frame} must be a real number, got {z!r}")
    value = float(z)
    if not math.isfinite(value):
        raise InvalidInputError(f"score of frame {frame} must be finite, got {value}")
    return value


def check_rng(rng: object) -> np.random.Generator:
    """A seeded ``np.random.Generator``; the global NumPy RNG is never used."""
    if not isinstance(rng, np.random.Generator):
        raise InvalidInputError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng)}"
        )
    return rng
