"""The paper's box filters: pedestrians the network cannot represent become ignore boxes.

Aghdam et al. (§4, "Datasets") discard every pedestrian under 50 pixels high or with
width/height outside [0.2, 0.65], "because of our network architecture": the smallest
default box is 55x31 and the aspect ratios of the five default boxes span that range.
We do not delete such boxes; we mark them ``ignore``, so that training neither counts
them as positives nor samples negatives on them, and evaluation does not count a
detection on them as a false positive. Sizes are measured **at training resolution**:
the image is first resized to the size the network sees.

These two rules are the whole filter, in training and in evaluation. Whether a box
fits some head (``trainer.targets``) is a training matter only: evaluation counts a
person no head fits, so its figures do not depend on the network's default boxes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from alscout.errors import ConfigError
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord

__all__ = ["BoxFilter", "PERSON_LABELS", "filter_boxes", "filter_record", "filter_dataset"]

log = logging.getLogger(__name__)

#: Labels that are positives; every other label is an ignore region after filtering.
PERSON_LABELS: tuple[str, ...] = ("person", "pedestrian")


@dataclass(frozen=True)
class BoxFilter:
    """Which boxes stay positives.

    ``min_height`` in pixels at training resolution; ``min_aspect`` / ``max_aspect``
    bound width/height (both inclusive). ``train_width`` / ``train_height``: the size
    images are resized to for training (None: boxes are measured in the stored image).
    ``labels``: the labels that may stay positives.
    """

    min_height: float = 50.0
    min_aspect: float = 0.2
    max_aspect: float = 0.65
    train_width: int | None = None
    train_height: int | None = None
    labels: tuple[str, ...] = PERSON_LABELS

    def __post_init__(self) -> None:
        if not self.min_height >= 0:
            raise ConfigError(f"min_height must be >= 0, got {self.min_height}")
        if not 0 <= self.min_aspect <= self.max_aspect:
            raise ConfigError(
                f"need 0 <= min_aspect <= max_aspect, got {self.min_aspect}, {self.max_aspect}"
            )
        if (self.train_width is None) != (self.train_height is None):
            raise ConfigError("give both train_width and train_height, or neither")
        if (
            self.train_width is not None
            and self.train_height is not None
            and (self.train_width < 1 or self.train_height < 1)
        ):
            raise ConfigError(
                f"training size must be positive, got {self.train_width}x{self.train_height}"
            )

    @classmethod
    def at_input(cls, height: int, width: int, reference_height: float = 480.0) -> BoxFilter:
        """The paper's filter for a network input of ``height x width`` pixels.

        Boxes are measured after resizing to that input, and the 50 px minimum is
        scaled from the paper's ``reference_height`` (480, its 640x480 input), as the
        default boxes are: 37.5 px at 480x360.
        """
        return cls(
            min_height=cls.min_height * height / reference_height,
            train_width=width,
            train_height=height,
        )

    def keeps(self, box: Box, sx: float = 1.0, sy: float = 1.0) -> bool:
        """Whether ``box`` (scaled by ``sx``, ``sy`` to training resolution) stays positive."""
        if box.ignore or box.label not in self.labels:
            return False
        width, height = box.w * sx, box.h * sy
        if height < self.min_height or height <= 0:
            return False
        return self.min_aspect <= width / height <= self.max_aspect


def filter_boxes(
    boxes: Sequence[Box], rule: BoxFilter, sx: float = 1.0, sy: float = 1.0
) -> tuple[Box, ...]:
    """The same boxes, in the same order, with those ``rule`` rejects marked ``ignore``.

    ``sx``, ``sy``: factors from the stored image to training resolution.
    """
    return tuple(b if b.ignore or rule.keeps(b, sx, sy) else replace(b, ignore=True) for b in boxes)


def filter_record(record: ImageRecord, rule: BoxFilter) -> ImageRecord:
    """One record with :func:`filter_boxes` applied at the rule's training resolution."""
    sx = sy = 1.0
    if rule.train_width is not None and rule.train_height is not None:
        sx, sy = rule.train_width / record.width, rule.train_height / record.height
    return replace(record, boxes=filter_boxes(record.boxes, rule, sx, sy))


def filter_dataset(dataset: Dataset, rule: BoxFilter | None = None) -> Dataset:
    """A new dataset with every record filtered (default rule: the paper's)."""
    rule = BoxFilter() if rule is None else rule
    images = [filter_record(record, rule) for record in dataset]
    before = sum(not b.ignore for r in dataset for b in r.boxes)
    after = sum(not b.ignore for r in images for b in r.boxes)
    log.info(
        "filtered dataset=%s positives_before=%d positives_after=%d", dataset.name, before, after
    )
    return Dataset(images=images, name=dataset.name, labels=dataset.labels)
