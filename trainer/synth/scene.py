"""Street-like backgrounds: sky, a row of buildings, sidewalk, road and street clutter.

The camera looks along a street from about head height, so the ground plane fixes
where a pedestrian of a given height stands: :meth:`Street.feet_y`. Clutter objects
(poles, bollards with a round top, trees, bins, parked cars) stand on the same
plane; poles and bollards are person-like hard negatives. The photometric side of
the domain (light, cast, blur, noise) is applied later, to the finished frame, by
:func:`finish_frame`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from alscout.trainer.synth.domain import RGB, DomainConfig

__all__ = ["Street", "CAMERA_RATIO", "draw_street", "finish_frame"]

#: Camera height over person height: a person ``h`` px tall stands with the feet
#: ``CAMERA_RATIO * h`` px below the horizon (a camera at ~1.5 m, people ~1.75 m).
CAMERA_RATIO = 0.85


@dataclass(frozen=True)
class Street:
    """Geometry of one background: image size and the horizon's row (pixels)."""

    width: int
    height: int
    horizon: float

    def feet_y(self, person_height: float) -> float:
        """Row of the feet of a person ``person_height`` px tall standing on the ground."""
        return self.horizon + CAMERA_RATIO * person_height

    def height_at(self, feet_y: float) -> float:
        """Height in pixels of a ~1.75 m person whose feet are at row ``feet_y``."""
        return max(0.0, (feet_y - self.horizon) / CAMERA_RATIO)


def _jitter(rng: np.random.Generator, colour: RGB, amount: int = 18) -> RGB:
    c = np.clip(np.array(colour) + rng.integers(-amount, amount + 1, 3), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def _pick(rng: np.random.Generator, palette: tuple[RGB, ...]) -> RGB:
    return _jitter(rng, palette[int(rng.integers(len(palette)))])


def _texture(rng: np.random.Generator, height: int, width: int, amplitude: float) -> np.ndarray:
    """Low-frequency noise ``[H, W, 1]`` float32 with standard deviation ~``amplitude``."""
    coarse = rng.normal(0.0, amplitude, size=(max(2, height // 24), max(2, width // 24), 1))
    fine = rng.normal(0.0, amplitude * 0.4, size=(max(2, height // 4), max(2, width // 4), 1))
    up: np.ndarray = cv2.resize(
        coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC
    )
    up += cv2.resize(fine.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return up[:, :, None]


def _buildings(
    rng: np.random.Generator, canvas: np.ndarray, domain: DomainConfig, base: int
) -> None:
    height, width = canvas.shape[:2]
    x = -int(rng.integers(0, width // 10 + 1))
    while x < width:
        bw = int(rng.uniform(0.08, 0.25) * width)
        top = int(rng.uniform(0.02, 0.3) * height)
        wall = _pick(rng, domain.building_palette)
        cv2.rectangle(canvas, (x, top), (x + bw, base), wall, -1)
        window = tuple(int(c * rng.uniform(0.35, 0.7)) for c in wall)
        step_x, step_y = (
            max(6, bw // int(rng.integers(3, 7))),
            max(8, int(rng.uniform(0.04, 0.07) * height)),
        )
        for wy in range(top + step_y // 2, base - step_y, step_y):
            for wx in range(x + step_x // 3, x + bw - step_x // 2, step_x):
                cv2.rectangle(canvas, (wx, wy), (wx + step_x // 2, wy + step_y // 2), window, -1)
        x += bw + int(rng.integers(0, max(1, width // 40)))


def _clutter(
    rng: np.random.Generator, canvas: np.ndarray, street: Street, domain: DomainConfig
) -> None:
    """Street objects, far ones first so near ones overlap them."""
    count = int(rng.poisson(domain.clutter))
    # along the far half of the ground: near objects would hide the whole scene
    far = street.horizon + 0.55 * (street.height - street.horizon)
    feet = np.sort(rng.uniform(street.horizon + 8, far, size=count))
    for foot in feet:
        scale = street.height_at(float(foot))  # a person's height at this depth
        cx = float(rng.uniform(0, street.width))
        kind = int(rng.integers(5))
        dark = _pick(rng, ((60, 60, 60), (40, 50, 45), (90, 85, 80)))
        f = int(foot)
        if kind == 0:  # lamp or sign pole
            top = int(foot - scale * rng.uniform(1.6, 2.4))
            cv2.rectangle(canvas, (int(cx), top), (int(cx + max(2, scale * 0.05)), f), dark, -1)
            if rng.random() < 0.5:
                sign = _vivid_sign(rng)
                cv2.rectangle(
                    canvas,
                    (int(cx - scale * 0.12), top),
                    (int(cx + scale * 0.17), int(top + scale * 0.25)),
                    sign,
                    -1,
                )
        elif kind == 1:  # bollard with a round head: a person-like hard negative
            bh, bw = scale * 0.55, scale * 0.14
            cv2.rectangle(
                canvas, (int(cx - bw / 2), int(foot - bh)), (int(cx + bw / 2), f), dark, -1
            )
            cv2.circle(
                canvas, (int(cx), int(foot - bh)), max(2, int(bw * 0.6)), dark, -1, cv2.LINE_AA
            )
        elif kind == 2:  # tree
            trunk = (int(cx), int(foot - scale * 1.4))
            cv2.rectangle(
                canvas,
                (int(cx - scale * 0.05), trunk[1]),
                (int(cx + scale * 0.05), f),
                (90, 65, 40),
                -1,
            )
            leaves = _pick(rng, ((60, 120, 50), (40, 90, 40), (90, 130, 60)))
            cv2.circle(
                canvas, trunk, max(3, int(scale * rng.uniform(0.25, 0.4))), leaves, -1, cv2.LINE_AA
            )
        elif kind == 3:  # bin
            cv2.rectangle(
                canvas,
                (int(cx - scale * 0.15), int(foot - scale * 0.5)),
                (int(cx + scale * 0.15), f),
                _vivid_sign(rng),
                -1,
            )
        else:  # parked car, side view
            car_w, car_h = scale * 2.4, scale * 0.75
            body = _vivid_sign(rng)
            cv2.rectangle(
                canvas,
                (int(cx), int(foot - car_h)),
                (int(cx + car_w), int(foot - car_h * 0.2)),
                body,
                -1,
            )
            cv2.rectangle(
                canvas,
                (int(cx + car_w * 0.2), int(foot - car_h * 1.35)),
                (int(cx + car_w * 0.75), int(foot - car_h)),
                body,
                -1,
            )
            for wheel in (0.22, 0.78):
                cv2.circle(
                    canvas,
                    (int(cx + car_w * wheel), int(foot - car_h * 0.2)),
                    max(2, int(car_h * 0.2)),
                    (25, 25, 25),
                    -1,
                    cv2.LINE_AA,
                )


def _vivid_sign(rng: np.random.Generator) -> RGB:
    return _pick(
        rng, ((200, 40, 40), (40, 90, 190), (230, 200, 40), (40, 150, 70), (220, 220, 220))
    )


def draw_street(
    rng: np.random.Generator, domain: DomainConfig, width: int = 640, height: int = 480
) -> tuple[np.ndarray, Street]:
    """A new background ``[height, width, 3]`` uint8 RGB and its ground geometry."""
    horizon = domain.horizon * height * rng.uniform(0.93, 1.07)
    street = Street(width, height, float(horizon))
    top, bottom = (
        np.array(_pick(rng, domain.sky_palette), np.float32),
        np.array(_pick(rng, domain.sky_palette), np.float32),
    )
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    canvas = np.ascontiguousarray(
        np.broadcast_to(top + (bottom - top) * rows, (height, width, 3)).astype(np.uint8)
    )
    base = int(horizon + 0.06 * height)
    _buildings(rng, canvas, domain, base)
    # sidewalk below the buildings, a road in perspective in front of it
    cv2.rectangle(canvas, (0, base), (width, height), _pick(rng, domain.ground_palette), -1)
    vx = width * rng.uniform(0.35, 0.65)
    road = np.array(
        [
            [vx - width * 0.05, base],
            [vx + width * 0.05, base],
            [width * 1.6, height],
            [-width * 0.6, height],
        ],
        np.int32,
    )
    road_colour = _pick(rng, domain.ground_palette)
    cv2.fillPoly(canvas, [road], tuple(int(c * 0.8) for c in road_colour))
    for t in np.linspace(0.05, 1.0, 9):
        y0, y1 = base + (height - base) * t**2, base + (height - base) * (t + 0.04) ** 2
        cv2.line(
            canvas,
            (int(vx), int(y0)),
            (int(vx), int(min(y1, height))),
            (230, 230, 220),
            max(1, int(6 * t)),
        )
    if domain.texture > 0:
        tex = _texture(rng, height, width, domain.texture)
        tex[: int(horizon * 0.6)] *= 0.3  # sky stays smooth
        canvas = np.clip(canvas.astype(np.float32) + tex, 0, 255).astype(np.uint8)
    _clutter(rng, canvas, street, domain)
    return canvas, street


def finish_frame(rng: np.random.Generator, image: np.ndarray, domain: DomainConfig) -> np.ndarray:
    """Apply the domain's light, contrast, colour cast, lens blur and sensor noise.

    ``image``: ``[H, W, 3]`` uint8 RGB; returns a new uint8 image of the same shape.
    """
    pixels: np.ndarray = image.astype(np.float32)
    gains = np.array(domain.colour_cast, np.float32) * domain.brightness
    pixels = ((pixels - 128.0) * domain.contrast + 128.0) * gains
    if domain.blur_sigma > 0:
        sigma = domain.blur_sigma * image.shape[0] / 480.0
        pixels = cv2.GaussianBlur(pixels, (0, 0), sigma)
    if domain.noise_std > 0:
        pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(domain.noise_std)
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
