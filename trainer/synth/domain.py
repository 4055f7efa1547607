"""The domain knob of the synthetic generator: how a camera and a city look.

A :class:`DomainConfig` fixes everything that differs between two datasets while
pedestrians stay pedestrians: light, colour cast, palettes of sky, buildings and
ground, texture, how crowded and cluttered the street is, lens blur and sensor noise.
Two presets stand for the paper's setting, where the initial labeled set (CityPersons)
and the unlabeled pool (Caltech) look different: ``source`` is a bright, clean,
colourful city with few people; ``target`` a dim, bluish, blurred and noisy one, more
crowded and cluttered, with other building and ground colours.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from alscout.errors import ConfigError

__all__ = ["DomainConfig", "PRESETS", "domain_preset"]

RGB = tuple[int, int, int]


def _check_palette(name: str, palette: tuple[RGB, ...]) -> None:
    if not palette:
        raise ConfigError(f"{name} needs at least one colour")
    for colour in palette:
        if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
            raise ConfigError(f"{name}: {colour} is not an RGB colour in 0..255")


@dataclass(frozen=True)
class DomainConfig:
    """Appearance of one synthetic domain; validated on construction.

    ``brightness``: gain on all pixels (1 = as drawn). ``contrast``: spread around
    mid-grey. ``colour_cast``: per-channel RGB gains. ``*_palette``: RGB colours the
    scene draws from. ``texture``: amplitude (grey levels) of low-frequency texture on
    walls and ground. ``density``: mean number of pedestrians in a still image or in
    view at once in a video (Poisson). ``clutter``: mean number of street objects
    (poles, trees, cars, bins), some person-like. ``blur_sigma``: Gaussian lens blur in
    pixels at 640x480 (0 = none). ``noise_std``: Gaussian sensor noise in grey levels.
    ``size_jitter``: relative jitter of a pedestrian's height around its default box;
    ``aspect_jitter``: relative jitter of its width/height. ``horizon``: the horizon's
    height as a fraction of the image height (camera pitch).
    """

    name: str = "source"
    brightness: float = 1.0
    contrast: float = 1.0
    colour_cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    sky_palette: tuple[RGB, ...] = ((135, 190, 235), (170, 210, 240), (110, 170, 225))
    building_palette: tuple[RGB, ...] = (
        (200, 170, 140),
        (180, 90, 70),
        (220, 210, 190),
        (150, 150, 160),
        (230, 190, 120),
    )
    ground_palette: tuple[RGB, ...] = ((120, 120, 118), (150, 145, 135), (95, 95, 100))
    texture: float = 8.0
    density: float = 3.0
    clutter: float = 3.0
    blur_sigma: float = 0.0
    noise_std: float = 2.0
    size_jitter: float = 0.12
    aspect_jitter: float = 0.1
    horizon: float = 0.42

    def __post_init__(self) -> None:
        positives = {"brightness": self.brightness, "contrast": self.contrast}
        for key, value in positives.items():
            if not 0 < value <= 4:
                raise ConfigError(f"{key} must be in (0, 4], got {value}")
        if len(self.colour_cast) != 3 or not all(0 < c <= 4 for c in self.colour_cast):
            raise ConfigError(f"colour_cast must be three gains in (0, 4], got {self.colour_cast}")
        for name in ("sky_palette", "building_palette", "ground_palette"):
            _check_palette(name, getattr(self, name))
        non_negative = {
            "texture": self.texture,
            "density": self.density,
            "clutter": self.clutter,
            "blur_sigma": self.blur_sigma,
            "noise_std": self.noise_std,
        }
        for key, value in non_negative.items():
            if not value >= 0:
                raise ConfigError(f"{key} must be >= 0, got {value}")
        if not 0 <= self.size_jitter < 0.5 or not 0 <= self.aspect_jitter < 0.5:
            raise ConfigError("size_jitter and aspect_jitter must be in [0, 0.5)")
        if not 0.2 <= self.horizon <= 0.6:
            raise ConfigError(
                f"horizon must be in [0.2, 0.6] of the image height, got {self.horizon}"
            )

    def with_(self, **changes: object) -> DomainConfig:
        """A copy with some fields changed (validated again)."""
        # values of any type: __post_init__ checks them again
        return replace(self, **changes)  # type: ignore[arg-type]


PRESETS: dict[str, DomainConfig] = {
    "source": DomainConfig(),
    "target": DomainConfig(
        name="target",
        brightness=0.72,
        contrast=0.8,
        colour_cast=(0.85, 0.95, 1.15),
        sky_palette=((150, 155, 165), (120, 125, 140), (175, 175, 180)),
        building_palette=((90, 95, 105), (120, 110, 100), (70, 80, 80), (140, 135, 125)),
        ground_palette=((70, 72, 78), (95, 90, 85), (55, 58, 60)),
        texture=18.0,
        density=5.0,
        clutter=7.0,
        blur_sigma=1.2,
        noise_std=7.0,
        size_jitter=0.15,
        aspect_jitter=0.12,
        horizon=0.38,
    ),
}


def domain_preset(name: str) -> DomainConfig:
    """The preset called ``name`` ("source" or "target"); ConfigError otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown domain {name!r}; presets: {', '.join(PRESETS)}") from None
