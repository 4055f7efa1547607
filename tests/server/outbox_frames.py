"""Flagged frames for the outbox tests (in-memory and durable)."""

from __future__ import annotations

from alscout.server.outbox import FlaggedFrame


def flagged(index: int, **kw) -> FlaggedFrame:
    """A small flagged frame of recording rec-1/front; ``kw`` overrides any field."""
    base = dict(recording_id="rec-1", camera_id="front", frame_index=index,
                image=b"\xff\xd8 jpeg bytes %d" % index, image_format="jpeg", z=0.5,
                smoothed=0.4, threshold=0.1, model_version="v1", model_hash="ab" * 32)  # fmt: skip
    base.update(kw)
    return FlaggedFrame(**base)


def sized(index: int, nbytes: int, smoothed: float, **kw) -> FlaggedFrame:
    """A frame whose image is exactly ``nbytes`` long and unique to ``index``."""
    head = b"frame %06d|" % index
    return flagged(index, image=head + b"x" * (nbytes - len(head)), smoothed=smoothed, **kw)
