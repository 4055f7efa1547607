"""Pedestrian-like figures: head, torso, arms and legs drawn with OpenCV into a box.

A figure fills its annotation box ``(x, y, w, h)`` the way a person fills a
hand-drawn box: the head touches the top, the feet the bottom, the shoulders, the
swinging arms and the striding legs reach the sides. ``phase`` (radians) is the
point in the walking cycle, so a video advances it frame by frame; ``facing`` says
whether the figure is seen from the front (0) or walks left (-1) or right (+1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from alscout.trainer.evaluation.detections import DEFAULT_BOXES as PAPER_DEFAULT_BOXES
from alscout.trainer.synth.domain import RGB, DomainConfig

__all__ = [
    "PAPER_DEFAULT_BOXES",
    "Appearance",
    "random_appearance",
    "sample_box_size",
    "draw_pedestrian",
]

_SKIN: tuple[RGB, ...] = (
    (241, 194, 166),
    (224, 172, 130),
    (198, 134, 90),
    (141, 85, 52),
    (88, 55, 38),
)
_HAIR: tuple[RGB, ...] = ((30, 25, 20), (80, 50, 30), (150, 110, 60), (200, 190, 170), (60, 60, 60))
_DARK: tuple[RGB, ...] = ((30, 35, 60), (40, 40, 40), (70, 60, 50), (20, 30, 30), (90, 90, 100))

#: Sub-pixel precision for OpenCV drawing (coordinates are multiplied by 2**_SHIFT).
_SHIFT = 3


@dataclass(frozen=True)
class Appearance:
    """Colours (RGB) and build of one figure; ``bag`` draws a bag at one hip."""

    skin: RGB
    hair: RGB
    shirt: RGB
    trousers: RGB
    shoes: RGB
    shoulders: float  # shoulder width as a fraction of the box width, 0.5..0.8
    bag: bool


def _pick(rng: np.random.Generator, palette: tuple[RGB, ...]) -> RGB:
    return palette[int(rng.integers(len(palette)))]


def _vivid(rng: np.random.Generator) -> RGB:
    hsv = np.array([[[rng.integers(0, 180), rng.integers(60, 256), rng.integers(60, 256)]]])
    r, g, b = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def random_appearance(rng: np.random.Generator) -> Appearance:
    """Colours and build drawn from fixed palettes and a random vivid shirt."""
    trousers = _pick(rng, _DARK) if rng.random() < 0.7 else _vivid(rng)
    return Appearance(
        skin=_pick(rng, _SKIN),
        hair=_pick(rng, _HAIR),
        shirt=_vivid(rng),
        trousers=trousers,
        shoes=_pick(rng, _DARK),
        shoulders=float(rng.uniform(0.5, 0.8)),
        bag=bool(rng.random() < 0.25),
    )


def sample_box_size(
    rng: np.random.Generator, domain: DomainConfig, head: int, sx: float = 1.0, sy: float = 1.0
) -> tuple[float, float]:
    """``(height, width)`` of a new figure near default box ``head``, in image pixels.

    Height and width/height ratio are jittered by the domain's relative jitters;
    ``sx``, ``sy`` scale from 640x480 to the image size.
    """
    base_h, base_w = PAPER_DEFAULT_BOXES[head]
    height = base_h * (1.0 + rng.uniform(-domain.size_jitter, domain.size_jitter))
    aspect = base_w / base_h * (1.0 + rng.uniform(-domain.aspect_jitter, domain.aspect_jitter))
    return height * sy, height * aspect * sx


def _pt(x: float, y: float) -> tuple[int, int]:
    return round(x * (1 << _SHIFT)), round(y * (1 << _SHIFT))


def _limb(
    image: np.ndarray, a: tuple[float, float], b: tuple[float, float], width: float, colour: RGB
) -> None:
    thickness = max(1, round(width))
    cv2.line(image, _pt(*a), _pt(*b), colour, thickness, cv2.LINE_AA, _SHIFT)


def _ellipse(
    image: np.ndarray, centre: tuple[float, float], axes: tuple[float, float], colour: RGB
) -> None:
    axes_px = (max(1, round(axes[0] * (1 << _SHIFT))), max(1, round(axes[1] * (1 << _SHIFT))))
    cv2.ellipse(image, _pt(*centre), axes_px, 0, 0, 360, colour, -1, cv2.LINE_AA, _SHIFT)


def draw_pedestrian(
    image: np.ndarray,
    box: tuple[float, float, float, float],
    look: Appearance,
    phase: float = 0.0,
    facing: int = 0,
) -> None:
    """Draw one figure filling ``box = (x, y, w, h)`` (pixels) into ``image`` in place.

    ``image``: ``[H, W, 3]`` uint8 RGB; parts outside the image are clipped by OpenCV.
    """
    x, y, w, h = box
    cx = x + w / 2
    swing = math.sin(phase)
    stride = 1.0 if facing else 0.35  # legs seen from the front barely spread
    limb = max(1.0, 0.16 * w)
    hip_y, shoulder_y = y + 0.52 * h, y + 0.19 * h
    foot_y = y + h - limb / 2 - 0.01 * h  # the round cap of the leg ends at the box
    half_hip = 0.12 * w

    # legs behind arms and torso; the far leg darker
    for side, sign in ((-1, 1.0), (1, -1.0)):
        hip = (cx + side * half_hip * (0.3 if facing else 1.0), hip_y)
        reach = sign * swing * stride * (w / 2 - limb / 2 - half_hip * 0.3)
        foot = (float(np.clip(hip[0] + reach, x + limb / 2, x + w - limb / 2)), foot_y)
        knee = ((hip[0] + foot[0]) / 2 + facing * 0.04 * w * abs(swing), (hip_y + foot_y) / 2)
        r, g, b = look.trousers
        colour = look.trousers if sign > 0 else (int(r * 0.8), int(g * 0.8), int(b * 0.8))
        _limb(image, hip, knee, limb * 1.1, colour)
        _limb(image, knee, foot, limb, colour)
        toe = foot[0] + (facing or side) * limb * 0.4
        _ellipse(image, (toe, y + h - 0.025 * h - 1), (limb * 0.75, 0.025 * h), look.shoes)

    # torso: a trapezoid from shoulders to hips
    half_sh = look.shoulders * w / 2 * (0.75 if facing else 1.0)
    torso = np.array(
        [
            _pt(cx - half_sh, shoulder_y),
            _pt(cx + half_sh, shoulder_y),
            _pt(cx + half_hip * 1.5, hip_y + 0.03 * h),
            _pt(cx - half_hip * 1.5, hip_y + 0.03 * h),
        ],
        dtype=np.int32,
    )
    cv2.fillPoly(image, [torso], look.shirt, cv2.LINE_AA, _SHIFT)

    # arms swing against the legs; hands stay inside the box
    arm_len = 0.36 * h
    for side, sign in ((-1, -1.0), (1, 1.0)):
        shoulder = (cx + side * (half_sh - limb * 0.4), shoulder_y + limb * 0.4)
        angle = sign * swing * (0.5 if facing else 0.15) + side * 0.12
        hand_x = shoulder[0] + math.sin(angle) * arm_len * (1 if facing else 0.6)
        hand = (
            float(np.clip(hand_x, x + limb * 0.4, x + w - limb * 0.4)),
            shoulder[1] + math.cos(angle) * arm_len,
        )
        _limb(image, shoulder, hand, limb * 0.8, look.shirt)
        _ellipse(image, hand, (limb * 0.45, limb * 0.45), look.skin)
    if look.bag:
        bag_x = cx + (1 if facing >= 0 else -1) * half_sh
        _ellipse(image, (bag_x, hip_y), (0.1 * w, 0.07 * h), look.shoes)

    # neck, head, hair
    head_ry = 0.075 * h
    head_rx = min(0.6 * head_ry, 0.24 * w)
    head_c = (cx + facing * 0.02 * w, y + head_ry * 1.05 + 1)
    _limb(
        image,
        (cx, head_c[1] + head_ry * 0.6),
        (cx, shoulder_y + 0.01 * h),
        head_rx * 0.9,
        look.skin,
    )
    _ellipse(image, head_c, (head_rx, head_ry), look.skin)
    hair_c = (head_c[0] - facing * 0.2 * head_rx, head_c[1] - head_ry * 0.35)
    _ellipse(image, hair_c, (head_rx * 1.02, head_ry * 0.7), look.hair)
