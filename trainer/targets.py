"""Per-head training targets: which pixels are pedestrian centres for which head.

Everything here works in pixels of the *training input* (the image after resizing),
with the default boxes scaled to that input (``DetectorConfig.boxes_at``).

- A ground-truth box *fits* default box ``k`` when the two boxes, centred on each
  other and both standardised to the width / height ``fit_aspect`` (0.41, as the
  Caltech protocol standardises every box before matching), overlap with IoU >=
  ``fit_iou`` (0.5: the Caltech match threshold, so that a detection of head ``k``
  centred on the pedestrian counts as a hit). With equal aspects that IoU is
  ``(min(h, h_k) / max(h, h_k))^2``: the fit is on height alone. The box's *head* is
  the default box of highest such IoU (the nearest height). ``fit_aspect=None``
  compares the boxes as given (before 2026-12-03): a narrow person then fits a
  narrower, shorter default box better, and its detection is too short once the
  evaluation standardises widths.
- A box is *trainable* when it passes the paper's filters
  (:class:`~alscout.trainer.data.filters.BoxFilter`: a person label, not ignore, at
  least ``min_height`` tall (50 px at the 640x480 reference, scaled with the input
  height), width/height in ``aspect_range``) and fits some head. Every other box is
  an ignore region: its whole area is IGNORE in every head (a pedestrian we cannot
  learn is still no negative).
- Near the centre: the pixel whose centre lies in the axis-aligned rectangle of
  ``centre_fraction`` times the box's width and height, centred on the box (at least
  the pixel holding the centre) is POSITIVE in the box's head. The surrounding
  rectangle of ``ignore_fraction`` times the box's size is IGNORE in that head (a
  slightly off-centre detection still matches) and in every other head the box fits.
  With ``share_iou`` set, another head shares the box this way only when its fit
  IoU reaches ``share_iou``: a head whose box, centred, would overlap the person by
  less leaves a near miss, so the person's centre there is a scale negative instead.
- Positives win over ignores; everything else is NEGATIVE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from alscout.errors import ConfigError, InvalidInputError
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord
from alscout.trainer.data.augment import (
    hflip,
    photometric_jitter,
    random_zoom,
    reduce_detail,
    resize_to,
    zoom_holding,
)
from alscout.trainer.data.filters import BoxFilter
from alscout.trainer.data.images import load_image
from alscout.trainer.model import DetectorConfig

if TYPE_CHECKING:  # config.py imports this module for TargetConfig
    from alscout.trainer.config import TrainConfig

__all__ = [
    "TargetConfig",
    "POSITIVE",
    "NEGATIVE",
    "IGNORE",
    "centred_iou",
    "fit_ious",
    "assign_head",
    "make_targets",
    "count_heads",
    "scale_negative_mask",
    "head_factors",
    "head_balanced_zoom",
    "sample_pixels",
    "sample_loss_pixels",
    "TrainingSet",
]

POSITIVE = 1
NEGATIVE = 0
IGNORE = -1


@dataclass(frozen=True)
class TargetConfig:
    """How ground-truth boxes become per-head labels; validated on construction.

    ``min_height``: pixels at the detector's reference height (480), scaled with the
    input height. ``aspect_range``: allowed width / height. ``fit_iou``: centred IoU a
    box needs with a default box to fit it, both standardised to the width / height
    ``fit_aspect`` first (None: as given). ``scale_negatives``: every trainable box's
    centre rectangle also enters the loss, as a negative, in each head the box does
    not fit (:func:`scale_negative_mask`), besides the sampled negatives; the shared
    logits then learn which head a person's size belongs to (on by default since
    2026-12-04: two seeds, docs/detector.md, "Loss"). ``centre_fraction`` and
    ``ignore_fraction``: sides of the positive and the ignore rectangles as fractions
    of the box's sides. ``share_iou``: the fit IoU another head needs to share a box
    (IGNORE around it, no scale negative); None: ``fit_iou``, every head the box fits
    (before 2026-12-04).
    """

    min_height: float = 50.0
    aspect_range: tuple[float, float] = (0.2, 0.65)
    fit_iou: float = 0.5
    centre_fraction: float = 0.2
    ignore_fraction: float = 0.5
    fit_aspect: float | None = 0.41
    scale_negatives: bool = True
    share_iou: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "aspect_range", tuple(float(v) for v in self.aspect_range))
        low, high = self.aspect_range
        if self.min_height < 0:
            raise ConfigError(f"min_height must be >= 0, got {self.min_height}")
        if not 0 < low <= high:
            raise ConfigError(f"aspect_range must be 0 < low <= high, got {self.aspect_range}")
        if not 0 < self.fit_iou <= 1:
            raise ConfigError(f"fit_iou must be in (0, 1], got {self.fit_iou}")
        if self.share_iou is not None and not self.fit_iou <= self.share_iou <= 1:
            raise ConfigError(
                f"share_iou must be in [fit_iou, 1] = [{self.fit_iou}, 1] or None, "
                f"got {self.share_iou}"
            )
        if self.fit_aspect is not None and not 0 < self.fit_aspect < 100:
            raise ConfigError(f"fit_aspect must be in (0, 100) or None, got {self.fit_aspect}")
        if not 0 <= self.centre_fraction <= self.ignore_fraction <= 1:
            raise ConfigError(
                "need 0 <= centre_fraction <= ignore_fraction <= 1, got "
                f"{self.centre_fraction} and {self.ignore_fraction}"
            )


def centred_iou(heights: np.ndarray, widths: np.ndarray, default_boxes: np.ndarray) -> np.ndarray:
    """IoU of each box with each default box when both share a centre.

    ``heights``, ``widths``: ``[M]`` pixels; ``default_boxes``: ``[K, 2]`` (h, w)
    pixels. Returns ``[M, K]`` float64.
    """
    h = np.asarray(heights, dtype=np.float64)[:, None]
    w = np.asarray(widths, dtype=np.float64)[:, None]
    dh, dw = default_boxes[None, :, 0], default_boxes[None, :, 1]
    inter = np.minimum(h, dh) * np.minimum(w, dw)
    union = h * w + dh * dw - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def fit_ious(
    heights: np.ndarray, widths: np.ndarray, default_boxes: np.ndarray, config: TargetConfig
) -> np.ndarray:
    """:func:`centred_iou` as the fit rule measures it: ``[M, K]``.

    With ``config.fit_aspect`` set, boxes and default boxes are first standardised to
    that width / height (heights kept), as the Caltech protocol does before matching.
    """
    if config.fit_aspect is None:
        return centred_iou(heights, widths, default_boxes)
    heights = np.asarray(heights, dtype=np.float64)
    standard = np.stack([default_boxes[:, 0], config.fit_aspect * default_boxes[:, 0]], axis=1)
    return centred_iou(heights, config.fit_aspect * heights, standard)


def assign_head(
    box: Box, default_boxes: np.ndarray, min_height: float, config: TargetConfig
) -> tuple[int, np.ndarray]:
    """The head a box trains (-1: none, the box is an ignore region) and the heads sharing it.

    ``default_boxes``: ``[K, 2]`` (h, w) at the input size; ``min_height`` in input
    pixels. Returns ``(head, fits)`` with ``fits`` a ``[K]`` bool array: the heads the
    box fits (``fit_iou``), or with ``share_iou`` set, its head and those that fit it
    at ``share_iou``.
    """
    k = default_boxes.shape[0]
    none = (-1, np.zeros(k, dtype=bool))
    low, high = config.aspect_range
    if box.w <= 0 or not BoxFilter(min_height, low, high).keeps(box):
        return none
    ious = fit_ious(np.array([box.h]), np.array([box.w]), default_boxes, config)[0]
    fits = ious >= config.fit_iou
    if not fits.any():
        return none
    head = int(np.argmax(ious))
    if config.share_iou is not None:
        fits = ious >= config.share_iou
        fits[head] = True
    return head, fits


#: A box, the head it trains (-1: none) and the ``[K]`` heads that share it (assign_head).
Assignment = tuple[Box, int, np.ndarray]


def _rect(box: Box, fraction: float, height: int, width: int) -> tuple[slice, slice] | None:
    """Pixels whose centres lie in the centred rectangle of ``fraction`` of the box.

    The half sides are at least half a pixel, so the pixel holding the centre is in.
    """
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    rx = max(fraction * box.w / 2, 0.5)
    ry = max(fraction * box.h / 2, 0.5)
    # pixel j has its centre at j + 0.5: keep j with |j + 0.5 - cx| <= rx
    x0, x1 = int(np.ceil(cx - rx - 0.5)), int(np.floor(cx + rx - 0.5))
    y0, y1 = int(np.ceil(cy - ry - 0.5)), int(np.floor(cy + ry - 0.5))
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, width - 1), min(y1, height - 1)
    if x1 < x0 or y1 < y0:
        return None
    return slice(y0, y1 + 1), slice(x0, x1 + 1)


def _whole(box: Box, height: int, width: int) -> tuple[slice, slice] | None:
    x0, y0 = max(int(np.floor(box.x)), 0), max(int(np.floor(box.y)), 0)
    x1, y1 = min(int(np.ceil(box.x2)), width), min(int(np.ceil(box.y2)), height)
    if x1 <= x0 or y1 <= y0:
        return None
    return slice(y0, y1), slice(x0, x1)


def make_targets(
    boxes: Sequence[Box],
    height: int,
    width: int,
    detector: DetectorConfig,
    config: TargetConfig | None = None,
) -> np.ndarray:
    """Labels of every head for one training image.

    ``boxes`` are in pixels of the ``height x width`` training input. Returns
    ``[K, height, width]`` int8 with :data:`POSITIVE`, :data:`NEGATIVE` or
    :data:`IGNORE`.
    """
    config = config or TargetConfig()
    if height < 1 or width < 1:
        raise InvalidInputError(f"target size must be positive, got {width}x{height}")
    assigned = _assignments(boxes, height, width, detector, config)
    return _labels(assigned, detector.num_heads, height, width, config)


def _labels(
    assigned: list[Assignment], k: int, height: int, width: int, config: TargetConfig
) -> np.ndarray:
    """:func:`make_targets` of boxes already assigned to their heads."""
    ignore = np.zeros((k, height, width), dtype=bool)
    positive = np.zeros((k, height, width), dtype=bool)
    for box, head, fits in assigned:
        if head < 0:
            region = _whole(box, height, width)
            if region is not None:
                ignore[:, region[0], region[1]] = True
            continue
        ring = _rect(box, config.ignore_fraction, height, width)
        if ring is not None:
            ignore[fits, ring[0], ring[1]] = True
        centre = _rect(box, config.centre_fraction, height, width)
        if centre is not None:
            positive[head, centre[0], centre[1]] = True
    labels = np.full((k, height, width), NEGATIVE, dtype=np.int8)
    labels[ignore] = IGNORE
    labels[positive] = POSITIVE
    return labels


def scale_negative_mask(
    boxes: Sequence[Box],
    height: int,
    width: int,
    detector: DetectorConfig,
    config: TargetConfig | None = None,
) -> np.ndarray:
    """Pixels that are a person's centre in a head of the wrong size: ``[K, H, W]`` bool.

    For each box that trains a head, its centre rectangle (``centre_fraction``, as the
    positives) in every head it does not fit. Uniform sampling draws a few hundredths
    of an image's negatives, so these, which decide whether a head fires only on its
    own sizes, would almost never be in the loss. The mask may cover pixels another
    box labels POSITIVE or IGNORE; the caller keeps only NEGATIVE ones.
    """
    config = config or TargetConfig()
    assigned = _assignments(boxes, height, width, detector, config)
    return _wrong_heads(assigned, detector.num_heads, height, width, config)


def _wrong_heads(
    assigned: list[Assignment], k: int, height: int, width: int, config: TargetConfig
) -> np.ndarray:
    """:func:`scale_negative_mask` of boxes already assigned to their heads."""
    mask = np.zeros((k, height, width), dtype=bool)
    for box, head, fits in assigned:
        centre = _rect(box, config.centre_fraction, height, width) if head >= 0 else None
        if centre is not None:
            mask[~fits, centre[0], centre[1]] = True
    return mask


def count_heads(
    boxes: Sequence[Box],
    height: int,
    width: int,
    detector: DetectorConfig,
    config: TargetConfig | None = None,
) -> np.ndarray:
    """How many of ``boxes`` train each head (as :func:`make_targets` assigns them).

    ``boxes`` in pixels of the ``height x width`` training input. Returns ``[K]`` int64.
    """
    assigned = _assignments(boxes, height, width, detector, config or TargetConfig())
    return _head_counts(assigned, detector.num_heads)


def _head_counts(assigned: list[Assignment], k: int) -> np.ndarray:
    """:func:`count_heads` of boxes already assigned to their heads."""
    heads = [head for _, head, _ in assigned if head >= 0]
    return np.bincount(np.asarray(heads, np.int64), minlength=k).astype(np.int64)


def _assignments(
    boxes: Sequence[Box], height: int, width: int, detector: DetectorConfig, config: TargetConfig
) -> list[Assignment]:
    """Each box with its head and the heads it fits (:func:`assign_head`) at this size."""
    default_boxes = detector.boxes_at(height, width)
    min_height = config.min_height * height / detector.reference_size[0]
    return [(box, *assign_head(box, default_boxes, min_height, config)) for box in boxes]


#: Zoom factors tried per octave when :func:`head_factors` maps where a box trains each head.
_FACTORS_PER_OCTAVE = 48


def head_factors(
    box: Box,
    default_boxes: np.ndarray,
    min_height: float,
    config: TargetConfig,
    zoom_range: tuple[float, float],
) -> np.ndarray:
    """For each head, the zoom factors in ``zoom_range`` at which ``box`` trains it.

    Scaling a box by ``f`` changes which default box it fits best (and whether it
    passes ``min_height``); :func:`assign_head` decides at each factor of a
    log-spaced grid (48 per octave). ``default_boxes``: ``[K, 2]`` (h, w) at the
    input size; ``min_height`` in input pixels. Returns ``[K, 2]`` (lowest, highest)
    factor, NaN for a head the box cannot train in the range. Width/height does not
    change with ``f``, so a box outside ``aspect_range`` trains no head.
    """
    low, high = zoom_range
    octaves = np.log2(high / low)
    grid = low * 2.0 ** np.linspace(0, octaves, max(2, int(np.ceil(octaves * _FACTORS_PER_OCTAVE))))
    out = np.full((default_boxes.shape[0], 2), np.nan)
    lo, hi = config.aspect_range
    if box.h <= 0 or box.ignore or not lo <= box.w / box.h <= hi:
        return out
    ious = fit_ious(grid * box.h, grid * box.w, default_boxes, config)  # [F, K]
    trains = (ious.max(axis=1) >= config.fit_iou) & (grid * box.h >= min_height)
    heads = np.where(trains, ious.argmax(axis=1), -1)
    for k in range(default_boxes.shape[0]):
        factors = grid[heads == k]
        if factors.size:
            out[k] = factors.min(), factors.max()
    return out


def head_balanced_zoom(
    image: np.ndarray,
    boxes: Sequence[Box],
    rng: np.random.Generator,
    detector: DetectorConfig,
    config: TrainConfig,
) -> tuple[np.ndarray, tuple[Box, ...], int]:
    """Zoom so that a person trains a head drawn uniformly (scale-balanced sampling).

    Draw a head ``k`` uniformly, then a person of the image that can train ``k`` at
    some factor in ``config.zoom_range`` (:func:`head_factors`), then the factor
    log-uniformly among those; the zoom-in window holds that person
    (:func:`~alscout.trainer.data.augment.zoom_holding`). When no person can train
    ``k``, the head is drawn among those some person can train; when none can train
    any, the zoom is :func:`~alscout.trainer.data.augment.random_zoom`'s. Every head
    then gets positives at about the same rate, whatever sizes and shapes the
    dataset's people have. ``image``: ``[H, W, C]`` at the input size. Returns the
    image, the boxes and the head (-1 for the fallback).
    """
    height, width = image.shape[:2]
    default_boxes = detector.boxes_at(height, width)
    min_height = config.targets.min_height * height / detector.reference_size[0]
    people = [b for b in boxes if not b.ignore]
    factors = np.array(
        [
            head_factors(b, default_boxes, min_height, config.targets, config.zoom_range)
            for b in people
        ]
    ).reshape(len(people), default_boxes.shape[0], 2)
    trainable = ~np.isnan(factors[:, :, 0])  # [P, K]
    uniforms = (float(rng.uniform()), float(rng.uniform()))
    head = int(rng.integers(default_boxes.shape[0]))
    if not trainable.any():
        zoomed, moved, _ = random_zoom(image, boxes, rng, config.zoom_range)
        return zoomed, moved, -1
    if not trainable[:, head].any():
        reachable = np.flatnonzero(trainable.any(axis=0))
        head = int(reachable[rng.integers(reachable.size)])
    candidates = np.flatnonzero(trainable[:, head])
    person = int(candidates[rng.integers(candidates.size)])
    low, high = factors[person, head]
    factor = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    zoomed, moved = zoom_holding(image, boxes, factor, people[person], uniforms)
    return zoomed, moved, head


def sample_pixels(
    labels: np.ndarray,
    n2p: int,
    min_negatives: int,
    rng: np.random.Generator,
    hard_fraction: float = 0.0,
) -> np.ndarray:
    """Pixels that enter the loss: every positive and ``n2p`` negatives per positive.

    Per head of one image: all ``P`` positives, plus ``n2p * P`` negatives drawn
    uniformly without replacement (``min_negatives`` when ``P == 0``; all of them
    when fewer exist). Ignored pixels are never drawn. With ``hard_fraction`` ``f``,
    only ``wanted - round(f * wanted)`` are drawn here; the training step adds the
    rest as the hardest negatives (:func:`sample_loss_pixels` says how many).
    ``labels``: ``[K, H, W]`` int8 from :func:`make_targets`. Returns a ``[K, H, W]``
    bool mask.
    """
    return sample_loss_pixels(labels, n2p, min_negatives, rng, hard_fraction)[0]


def sample_loss_pixels(
    labels: np.ndarray,
    n2p: int,
    min_negatives: int,
    rng: np.random.Generator,
    hard_fraction: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sample_pixels`'s mask and, per head, the negatives it leaves to mining.

    Returns ``(mask [K, H, W] bool, hard [K] int64)``: ``hard[k]`` is how many of the
    ``n2p`` per positive the mask still lacks, never more than the negatives left out
    of it; the training step adds that many of the highest-scoring ones
    (:func:`alscout.trainer.training.add_hard_negatives`).
    """
    if labels.ndim != 3:
        raise InvalidInputError(f"labels must be [K, H, W], got shape {labels.shape}")
    if n2p < 0 or min_negatives < 0:
        raise InvalidInputError("n2p and min_negatives must be >= 0")
    if not 0.0 <= hard_fraction <= 1.0:
        raise InvalidInputError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
    mask = labels == POSITIVE
    hard = np.zeros(labels.shape[0], dtype=np.int64)
    for k in range(labels.shape[0]):
        negatives = np.flatnonzero(labels[k] == NEGATIVE)
        positives = int(mask[k].sum())
        wanted = n2p * positives if positives else min_negatives
        if wanted >= negatives.size:
            chosen = negatives
        else:
            uniform = wanted - round(hard_fraction * wanted)
            chosen = negatives[rng.choice(negatives.size, size=uniform, replace=False)]
            hard[k] = wanted - uniform
        mask[k].reshape(-1)[chosen] = True
    return mask, hard


class TrainingSet(torch.utils.data.Dataset):
    """Images resized to the training input, with per-head labels and loss masks.

    Item ``i``: ``image`` ``[H, W, 3]`` uint8, ``labels`` ``[K, H, W]`` int8,
    ``mask`` ``[K, H, W]`` bool (pixels in the loss), ``heads`` ``[K]`` int64 (boxes
    that train each head), ``hard`` ``[K]`` int64 (hard negatives the training step
    adds, ``TrainConfig.hard_negatives``), ``index`` ``i``. Call :meth:`set_epoch`
    before each epoch.

    Augmentation (``augment=True``, as the config enables it): mirror, then zoom, then
    photometric jitter. The mirror and the negatives come from
    ``default_rng([seed, epoch, i])`` as before zoom existed; zoom and jitter from
    ``default_rng([seed, epoch, i, 1])``, so every draw depends on the image and the
    epoch alone. With ``augment=False`` (validation) images are used as they are.
    """

    def __init__(
        self, dataset: Dataset, detector: DetectorConfig, config: TrainConfig, augment: bool = True
    ) -> None:
        self.dataset = dataset
        self.detector = detector
        self.config = config
        self.augment = augment
        self.epoch = 0
        self._cache: dict[int, tuple[np.ndarray, tuple]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose random draws the next items use."""
        self.epoch = int(epoch)

    def resized(self, index: int) -> tuple[np.ndarray, tuple]:
        """Image ``index`` at the input size and its boxes, before augmentation."""
        if index in self._cache:
            return self._cache[index]
        record: ImageRecord = self.dataset[index]
        height, width = self.config.input_size
        image, boxes = resize_to(load_image(record), record.boxes, width, height)
        if self.config.cache_images:
            self._cache[index] = (image, boxes)
        return image, boxes

    def preload(self, progress: bool = False) -> None:
        """Decode every image once, in dataset order, into the cache.

        Reading a video front to back decodes each frame once; the shuffled order of
        training would seek for almost every frame. Needs ``cache_images``.
        """
        if not self.config.cache_images:
            raise InvalidInputError("preload needs cache_images in the training config")
        for index in tqdm(range(len(self)), desc="load images", disable=not progress):
            self.resized(index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, boxes, rng = self.augmented(index)
        return self.item(image, boxes, rng, index)

    def augmented(self, index: int) -> tuple[np.ndarray, tuple, np.random.Generator]:
        """Image ``index`` and its boxes after this epoch's augmentation, and the
        generator :meth:`item` draws the sampled negatives from next."""
        image, boxes = self.resized(index)
        config = self.config
        rng = np.random.default_rng([config.seed, self.epoch, index])
        if self.augment and config.hflip and rng.random() < 0.5:
            image, boxes = hflip(image, boxes)
        if self.augment and (config.scale_aug or config.photometric > 0 or config.detail_loss > 1):
            image, boxes = self._scale_and_colour(image, boxes, index)
        return image, boxes, rng

    def item(
        self, image: np.ndarray, boxes: tuple, rng: np.random.Generator, index: int
    ) -> dict[str, Any]:
        """The item of an augmented image: labels, sampled loss mask, boxes per head."""
        config = self.config
        height, width = config.input_size
        k = self.detector.num_heads
        assigned = _assignments(boxes, height, width, self.detector, config.targets)
        labels = _labels(assigned, k, height, width, config.targets)
        mask, hard = sample_loss_pixels(
            labels, config.n2p, config.min_negatives, rng, config.hard_negatives
        )
        if config.targets.scale_negatives:
            mask |= _wrong_heads(assigned, k, height, width, config.targets) & (labels == NEGATIVE)
        heads = _head_counts(assigned, k)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "labels": torch.from_numpy(labels),
            "mask": torch.from_numpy(mask),
            "heads": torch.from_numpy(heads),
            "hard": torch.from_numpy(hard),
            "index": index,
        }

    def _scale_and_colour(
        self, image: np.ndarray, boxes: tuple, index: int
    ) -> tuple[np.ndarray, tuple]:
        """Zoom (with probability ``zoom_prob``), detail loss and photometric jitter,
        seeded per image."""
        config = self.config
        rng = np.random.default_rng([config.seed, self.epoch, index, 1])
        if config.scale_aug and rng.random() < config.zoom_prob:
            if config.zoom_mode == "heads":
                image, boxes, _ = head_balanced_zoom(image, boxes, rng, self.detector, config)
            else:
                image, boxes, _ = random_zoom(image, boxes, rng, config.zoom_range)
        if config.detail_loss > 1:  # drawn only when on: other runs keep their draws
            factor = float(np.exp(rng.uniform(0.0, np.log(config.detail_loss))))
            image = reduce_detail(image, factor)
        if config.photometric > 0:
            image = photometric_jitter(image, rng, config.photometric, config.photometric)
        return image, boxes
