"""The one internal annotation model every reader produces and every writer consumes.

Coordinates are pixels of the stored image, ``x, y`` the top-left corner, as in COCO
and MOTChallenge. A frame of a video is addressed by the video file and a 0-based
frame number; a still image by its file alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["Box", "ImageRecord", "Dataset"]


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
