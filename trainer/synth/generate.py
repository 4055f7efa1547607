"""Synthetic pedestrian datasets: still images and videos, with ground truth on disk.

Still images (``kind="stills"``) are independent street scenes with a Poisson number
of figures whose boxes follow the paper's default box sizes. Videos simulate walkers:
they enter at the image edges, cross at walking speed with a walking cycle, drift in
depth (growing or shrinking with the ground plane), occlude each other and leave.

Ground truth rules (both kinds): a figure's box is clipped to the image; it is an
ignore box when less than :data:`MIN_VISIBLE` of its full box is in the image and not
covered by the boxes of nearer figures (Caltech's "reasonable" subset likewise
ignores heavily occluded people). Everything is seeded by one ``np.random.Generator``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from alscout.errors import ConfigError, DataError
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord
from alscout.trainer.data.coco import write_coco
from alscout.trainer.data.mot import write_mot
from alscout.trainer.synth.domain import DomainConfig
from alscout.trainer.synth.figures import (
    PAPER_DEFAULT_BOXES,
    Appearance,
    draw_pedestrian,
    random_appearance,
    sample_box_size,
)
from alscout.trainer.synth.scene import Street, draw_street, finish_frame

__all__ = ["MIN_VISIBLE", "render_still", "VideoScene", "generate_stills", "generate_video"]

log = logging.getLogger(__name__)

#: A figure with less of its box visible than this is an ignore box.
MIN_VISIBLE = 0.5
_CONTAINERS = {"avi": "MJPG", "mp4": "mp4v", "png": ""}


@dataclass
class _Figure:
    """One pedestrian in a scene: box geometry in image pixels and how it moves."""

    track_id: int
    look: Appearance
    cx: float  # centre of the box, x
    feet: float  # bottom of the box, y
    factor: float  # height / the ground plane's height at ``feet``
    aspect: float  # width / height
    vx: float = 0.0  # pixels per frame
    vfeet: float = 0.0
    phase: float = 0.0
    phase_step: float = 0.0
    facing: int = 0

    def box(self, street: Street) -> tuple[float, float, float, float]:
        h = street.height_at(self.feet) * self.factor
        w = h * self.aspect
        return self.cx - w / 2, self.feet - h, w, h


def _new_figure(
    rng: np.random.Generator, domain: DomainConfig, street: Street, track_id: int
) -> _Figure:
    sx, sy = street.width / 640.0, street.height / 480.0
    head = int(rng.integers(len(PAPER_DEFAULT_BOXES)))
    h, w = sample_box_size(rng, domain, head, sx, sy)
    feet = min(street.feet_y(h) + rng.uniform(-0.03, 0.03) * street.height, street.height - 1.0)
    factor = h / max(street.height_at(feet), 1.0)
    return _Figure(
        track_id,
        random_appearance(rng),
        float(rng.uniform(w / 2, street.width - w / 2)),
        feet,
        factor,
        w / h,
        phase=float(rng.uniform(0, 2 * math.pi)),
        facing=int(rng.integers(-1, 2)),
    )


def _render(
    rng: np.random.Generator,
    background: np.ndarray,
    street: Street,
    figures: list[_Figure],
    domain: DomainConfig,
) -> tuple[np.ndarray, tuple[Box, ...]]:
    """Draw ``figures`` far to near on ``background``; boxes in the figures' order."""
    image = background.copy()
    height, width = image.shape[:2]
    owner = np.full((height, width), -1, np.int32)  # nearest figure's box at each pixel
    order = sorted(range(len(figures)), key=lambda i: figures[i].feet)
    boxes: list[tuple[float, float, float, float]] = [f.box(street) for f in figures]
    for i in order:
        fig = figures[i]
        draw_pedestrian(image, boxes[i], fig.look, fig.phase, fig.facing)
        x, y, w, h = boxes[i]
        owner[
            max(0, int(y)) : max(0, math.ceil(y + h)),
            max(0, int(x)) : max(0, math.ceil(x + w)),
        ] = i
    visible = np.bincount(owner[owner >= 0].ravel(), minlength=len(figures))
    out = []
    for i, fig in enumerate(figures):
        x, y, w, h = boxes[i]
        # clipped to the image, and rounded to 0.01 px as the MOT writer stores them
        x1, y1 = round(max(x, 0.0), 2), round(max(y, 0.0), 2)
        x2, y2 = round(min(x + w, float(width)), 2), round(min(y + h, float(height)), 2)
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        ignore = visible[i] < MIN_VISIBLE * w * h
        box_w, box_h = round(x2 - x1, 2), round(y2 - y1, 2)
        out.append(Box(x1, y1, box_w, box_h, "person", bool(ignore), fig.track_id))
    return finish_frame(rng, image, domain), tuple(out)


def render_still(
    rng: np.random.Generator, domain: DomainConfig, width: int = 640, height: int = 480
) -> tuple[np.ndarray, tuple[Box, ...]]:
    """One street scene: ``[height, width, 3]`` uint8 RGB and its boxes (pixels)."""
    background, street = draw_street(rng, domain, width, height)
    figures = [
        _new_figure(rng, domain, street, i + 1) for i in range(int(rng.poisson(domain.density)))
    ]
    return _render(rng, background, street, figures, domain)


class VideoScene:
    """Walkers crossing one static street; :meth:`step` renders the next frame.

    ``fps`` sets walking speed (~0.8 body heights per second) and the stride cycle
    (~1 s). New walkers arrive at the edges at a rate that keeps about
    ``domain.density`` of them in view.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        domain: DomainConfig,
        width: int = 640,
        height: int = 480,
        fps: float = 15.0,
    ) -> None:
        if fps <= 0:
            raise ConfigError(f"fps must be positive, got {fps}")
        self.rng, self.domain, self.fps = rng, domain, fps
        self.background, self.street = draw_street(rng, domain, width, height)
        self._next_id = 1
        self.figures: list[_Figure] = []
        for _ in range(int(rng.poisson(domain.density))):
            self.figures.append(self._walker(entering=False))
        # mean dwell of a walker crossing the frame, in frames, sets the arrival rate
        typical_speed = 0.8 * PAPER_DEFAULT_BOXES[2][0] * height / 480.0 / fps
        self._arrival_rate = domain.density * typical_speed / max(width, 1)

    def _walker(self, entering: bool) -> _Figure:
        fig = _new_figure(self.rng, self.domain, self.street, self._next_id)
        self._next_id += 1
        h = self.street.height_at(fig.feet) * fig.factor
        standing = not entering and self.rng.random() < 0.15
        direction = -1 if self.rng.random() < 0.5 else 1
        if entering:  # start just outside the edge it walks in from
            fig.cx = (
                -h * fig.aspect / 2 if direction > 0 else self.street.width + h * fig.aspect / 2
            )
        speed = 0.0 if standing else 0.8 * h / self.fps * self.rng.uniform(0.7, 1.3)
        fig.vx = direction * speed
        fig.vfeet = float(self.rng.normal(0.0, 0.004 * h)) if not standing else 0.0
        fig.facing = 0 if standing else direction
        fig.phase_step = 0.0 if standing else 2 * math.pi / self.fps * self.rng.uniform(0.8, 1.2)
        return fig

    def step(self) -> tuple[np.ndarray, tuple[Box, ...]]:
        """Render the current frame, then move every walker one frame on."""
        image, boxes = _render(self.rng, self.background, self.street, self.figures, self.domain)
        for fig in self.figures:
            fig.cx += fig.vx
            fig.phase += fig.phase_step
            feet = fig.feet + fig.vfeet
            if not self.street.horizon + 0.08 * self.street.height < feet < self.street.height:
                fig.vfeet = -fig.vfeet  # stay on the visible ground
            else:
                fig.feet = feet
        self.figures = [f for f in self.figures if self._in_view(f)]
        for _ in range(int(self.rng.poisson(self._arrival_rate))):
            self.figures.append(self._walker(entering=True))
        return image, boxes

    def _in_view(self, fig: _Figure) -> bool:
        x, _, w, _ = fig.box(self.street)
        return x + w > 0 and x < self.street.width


def _save_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise DataError(f"{path}: could not write the image")


def _write_manifest(out: Path, **fields: object) -> None:
    (out / "synth.json").write_text(json.dumps(fields, indent=1, default=str), encoding="utf-8")


def generate_stills(
    out: Path | str,
    count: int,
    domain: DomainConfig,
    seed: int,
    width: int = 640,
    height: int = 480,
) -> Dataset:
    """Write ``count`` still scenes to ``out/images/`` and ``out/annotations.json`` (COCO)."""
    if count < 1 or width < 32 or height < 32:
        raise ConfigError(
            f"need count >= 1 and a size of at least 32x32, got {count}, {width}x{height}"
        )
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        image, boxes = render_still(rng, domain, width, height)
        path = out / "images" / f"{i:06d}.png"
        _save_png(path, image)
        records.append(ImageRecord(i, path, width, height, boxes, sequence=f"synth-{domain.name}"))
    dataset = Dataset(records, name=f"synth-{domain.name}-stills")
    write_coco(dataset, out / "annotations.json")
    _write_manifest(
        out,
        kind="stills",
        count=count,
        seed=seed,
        width=width,
        height=height,
        domain=asdict(domain),
    )
    log.info("synth stills out=%s count=%d boxes=%d", out, count, dataset.num_boxes)
    return dataset


def generate_video(
    out: Path | str,
    frames: int,
    domain: DomainConfig,
    seed: int,
    width: int = 640,
    height: int = 480,
    fps: float = 15.0,
    container: str = "avi",
) -> Dataset:
    """Write a video of ``frames`` frames with ``out/gt/gt.txt`` (MOT) and ``out/annotations.json``.

    ``container``: "avi" (MJPG) or "mp4" (mp4v) writes ``out/video.<ext>``; "png"
    writes ``out/img1/000001.png ...`` (the MOTChallenge layout, lossless).
    """
    if container not in _CONTAINERS:
        raise ConfigError(f"unknown container {container!r}; use one of {', '.join(_CONTAINERS)}")
    if frames < 1 or width < 32 or height < 32:
        raise ConfigError(
            f"need frames >= 1 and a size of at least 32x32, got {frames}, {width}x{height}"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scene = VideoScene(np.random.default_rng(seed), domain, width, height, fps)
    name = f"synth-{domain.name}-{seed}"
    writer = None
    video = out / f"video.{container}"
    if container == "png":
        (out / "img1").mkdir(exist_ok=True)
    else:
        writer = cv2.VideoWriter(
            str(video), cv2.VideoWriter.fourcc(*_CONTAINERS[container]), fps, (width, height)
        )
        if not writer.isOpened():
            raise DataError(f"{video}: OpenCV cannot write {container} video here")
    records = []
    try:
        for i in range(frames):
            image, boxes = scene.step()
            if writer is None:
                path = out / "img1" / f"{i + 1:06d}.png"
                _save_png(path, image)
                records.append(ImageRecord(i, path, width, height, boxes, sequence=name))
            else:
                writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                records.append(ImageRecord(i, video, width, height, boxes, frame=i, sequence=name))
    finally:
        if writer is not None:
            writer.release()
    dataset = Dataset(records, name=name)
    write_mot(dataset, out / "gt" / "gt.txt")
    write_coco(dataset, out / "annotations.json")
    _write_manifest(
        out,
        kind="video",
        frames=frames,
        seed=seed,
        fps=fps,
        container=container,
        width=width,
        height=height,
        domain=asdict(domain),
    )
    log.info("synth video out=%s frames=%d boxes=%d", out, frames, dataset.num_boxes)
    return dataset
