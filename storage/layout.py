"""Where an uploaded frame lives in a sink, and which ids may name it.

The uploader writes each frame's files content-addressed at ``blobs/<sha256><suffix>``
and its JSON record at ``frames/<recording>/<camera>/<frame:012d>.json``; the fleet's
ingest reads the same keys. Recording and camera ids become folder names and key
segments, so they are checked once, here, for both sides.
"""

from __future__ import annotations

import re

from alscout.errors import InvalidInputError

__all__ = ["ID_PATTERN", "SUFFIXES", "check_id", "blob_key", "record_key"]

#: recording and camera ids become folder names and object keys: a safe alphabet, no "..".
ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: image format -> file suffix of its blob
SUFFIXES = {"jpeg": ".jpg", "png": ".png", "raw": ".raw"}


def check_id(kind: str, value: str) -> str:
    """Return ``value`` if it is a safe id (:data:`ID_PATTERN`, no ".."), else raise."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or ".." in value:
        raise InvalidInputError(
            f"{kind} {value!r} is not allowed: use 1-128 characters of A-Z a-z 0-9 . _ - "
            "without '..' (ids become folder names)"
        )
    return value


def blob_key(name: str) -> str:
    """Object key of a content-addressed file ``<sha256><suffix>``."""
    return f"blobs/{name}"


def record_key(recording_id: str, camera_id: str, frame_index: int) -> str:
    """Object key of a frame's JSON record."""
    return f"frames/{recording_id}/{camera_id}/{frame_index:012d}.json"
