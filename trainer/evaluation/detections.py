"""Decoding head maps into boxes: re-exported from :mod:`alscout.runtime.detections`.

The decoder moved down into the runtime (torch-free), where the vehicle's
detection-based acquisition functions use it; evaluation, the model and the synthetic
data keep importing it from here.
"""

from __future__ import annotations

from alscout.runtime.detections import (
    DEFAULT_BOXES,
    REFERENCE_SIZE,
    decode_detections,
    iou_matrix,
    local_maxima,
    nms,
)

__all__ = [
    "REFERENCE_SIZE",
    "DEFAULT_BOXES",
    "local_maxima",
    "iou_matrix",
    "nms",
    "decode_detections",
]
