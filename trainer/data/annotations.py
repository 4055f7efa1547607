"""The one internal annotation model every reader produces and every writer consumes.

Coordinates are pixels of the stored image, ``x, y`` the top-left corner, as in COCO
and MOTChallenge. A frame of a video is addressed by the video file and a 0-based
frame number; a still image by its file alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from alscout.errors import DataError

__all__ = ["Box", "ImageRecord", "Dataset", "clip_to_image"]


@dataclass(frozen=True)
class Box:
    """One annotated object. ``ignore`` boxes are neither positives nor negatives."""

    x: float
    y: float
    w: float
    h: float
    label: str = "person"
    ignore: bool = False
    track_id: int = -1

    @property
    def x2(self) -> float:
        return self.x + self.w

    @property
    def y2(self) -> float:
        return self.y + self.h

    def scaled(self, sx: float, sy: float) -> Box:
        """The same box in an image resized by ``sx`` horizontally and ``sy`` vertically."""
        return replace(self, x=self.x * sx, y=self.y * sy, w=self.w * sx, h=self.h * sy)


@dataclass(frozen=True)
class ImageRecord:
    """One image (or one video frame) and its boxes.

    ``source`` is an image file, or a video file when ``frame`` is not None
    (``frame`` 0-based). ``width`` and ``height`` are the stored image's size.
    """

    image_id: int
    source: Path
    width: int
    height: int
    boxes: tuple[Box, ...] = ()
    frame: int | None = None
    sequence: str = ""

    @property
    def is_video_frame(self) -> bool:
        return self.frame is not None


@dataclass
class Dataset:
    """An ordered list of images with their boxes; order is frame order for videos."""

    images: list[ImageRecord] = field(default_factory=list)
    name: str = ""
    labels: tuple[str, ...] = ("person",)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self.images)

    def __getitem__(self, index: int) -> ImageRecord:
        return self.images[index]

    def subset(self, indices: list[int] | range, name: str | None = None) -> Dataset:
        """A new dataset holding ``images[i]`` for ``i`` in ``indices``, in that order."""
        return Dataset(
            images=[self.images[i] for i in indices],
            name=self.name if name is None else name,
            labels=self.labels,
        )

    @property
    def num_boxes(self) -> int:
        return sum(len(record.boxes) for record in self.images)


def clip_to_image(box: Box, width: int, height: int, where: str) -> Box:
    """``box`` clipped to a ``width x height`` image, as every reader stores boxes.

    Pedestrians entering or leaving the frame are annotated with boxes that stick out
    of it; those are clipped. A box with a non-finite coordinate, no area, or no pixel
    inside the image is bad data: :class:`DataError` naming ``where`` (file and row).
    """
    values = (box.x, box.y, box.w, box.h)
    if not all(math.isfinite(v) for v in values):
        raise DataError(f"{where}: box {values} has a non-finite coordinate")
    if box.w <= 0 or box.h <= 0:
        raise DataError(f"{where}: box {values} has no area (width and height must be > 0)")
    x1, y1 = max(box.x, 0.0), max(box.y, 0.0)
    x2, y2 = min(box.x2, float(width)), min(box.y2, float(height))
    if x2 <= x1 or y2 <= y1:
        raise DataError(f"{where}: box {values} lies outside the {width}x{height} image")
    if (x1, y1, x2, y2) == (box.x, box.y, box.x2, box.y2):
        return box
    return replace(box, x=x1, y=y1, w=x2 - x1, h=y2 - y1)
