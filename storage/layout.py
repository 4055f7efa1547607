"""Where an uploaded frame lives in a sink, and which ids may name it.

The uploader writes each frame's files content-addressed at ``blobs/<sha256><suffix>``
and its JSON record at ``frames/<recording>/<camera>/<frame:012d>.json``; the fleet's
ingest reads the same keys. Recording and camera ids become folder names and key
segments, so they are checked once, here, for both sides: :func:`check_id` accepts an id
only when the record key it makes passes the sinks' own key check
(:func:`~alscout.storage.sinks.check_key`), so an id the server stored can always be
uploaded.
"""

from __future__ import annotations

import re

from alscout.errors import InvalidInputError, SinkError
from alscout.storage.sinks import check_key

__all__ = ["ID_PATTERN", "SUFFIXES", "check_id", "blob_key", "record_key"]

#: recording and camera ids become folder names and object keys: a safe alphabet; "." and
#: ".." (and any id holding "..") are refused on top of it
ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: image format -> file suffix of its blob
SUFFIXES = {"jpeg": ".jpg", "png": ".png", "raw": ".raw"}


def check_id(kind: str, value: str) -> str:
    """Return ``value`` if it is a safe id, else raise :class:`InvalidInputError`.

    Safe: :data:`ID_PATTERN`, no "..", and the record key the id makes (as recording and
    as camera) passes :func:`~alscout.storage.sinks.check_key`, so ids and keys agree by
    construction ("." alone would make a key segment the sinks refuse).
    """
    ok = isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None and ".." not in value
    if ok:
        try:
            check_key(record_key(value, value, 0))
        except SinkError:
            ok = False
    if not ok:
        raise InvalidInputError(
            f"{kind} {_shown(value)} is not allowed: use 1-128 characters of A-Z a-z 0-9 . _ - "
            "without '..' and not '.' alone (ids become folder names and object keys)"
        )
    return value


def _shown(value: object, limit: int = 64) -> str:
    """``value`` for an error message: its repr, cut to ``limit`` characters with its length
    (an id of 70,000 characters must not make an error message larger than gRPC allows)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    return repr(value)


def blob_key(name: str) -> str:
    """Object key of a content-addressed file ``<sha256><suffix>``."""
    return f"blobs/{name}"


def record_key(recording_id: str, camera_id: str, frame_index: int) -> str:
    """Object key of a frame's JSON record."""
    return f"frames/{recording_id}/{camera_id}/{frame_index:012d}.json"
