"""Input shape ranges for backends that compile for shapes (TensorRT and its ORT provider).

A TensorRT engine runs only the shapes its optimization profiles cover; the same
ranges are used to build an engine (export/) and to check a request (runtime/), so
they live here, below both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from alscout.errors import ConfigError

__all__ = ["ShapeProfile", "default_profiles", "format_ort_shape"]


@dataclass(frozen=True)
class ShapeProfile:
    """One optimization profile: ``(N, H, W)`` of ``images`` at min, opt and max.

    TensorRT tunes kernels for ``opt`` and accepts any shape between ``min`` and ``max``
    (every dimension independently).
    """

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            value = getattr(self, name)
            if len(value) != 3 or min(value) < 1:
                raise ConfigError(f"profile {name} must be (N, H, W) >= 1, got {value}")
            object.__setattr__(self, name, tuple(int(v) for v in value))
        for axis, label in enumerate("NHW"):
            if not self.min[axis] <= self.opt[axis] <= self.max[axis]:
                raise ConfigError(
                    f"profile needs min <= opt <= max for {label}, got "
                    f"{self.min[axis]}, {self.opt[axis]}, {self.max[axis]}"
                )

    def covers(self, shape: tuple[int, ...]) -> bool:
        """Whether an ``images`` shape ``[N, 3, H, W]`` lies inside this profile."""
        n, _, h, w = shape
        return all(lo <= v <= hi for lo, v, hi in zip(self.min, (n, h, w), self.max, strict=True))

    def images_shape(self, which: str) -> tuple[int, int, int, int]:
        """``[N, 3, H, W]`` of ``which`` in "min" | "opt" | "max"."""
        n, h, w = getattr(self, which)
        return (n, 3, h, w)

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, data: dict[str, list[int]]) -> ShapeProfile:
        def nhw(key: str) -> tuple[int, int, int]:
            # of any length here: __post_init__ checks it and says what was wrong
            return cast("tuple[int, int, int]", tuple(data[key]))

        return cls(min=nhw("min"), opt=nhw("opt"), max=nhw("max"))


def default_profiles(
    input_size: tuple[int, int], max_batch: int = 16, batch_sizes: tuple[int, ...] = ()
) -> tuple[ShapeProfile, ...]:
    """Profiles for frames resized to the model's ``input_size`` (height, width).

    One profile per batch size in ``batch_sizes`` (tuned for exactly that batch, e.g.
    16 = 8 frames + 8 mirrors), then a general one from 1 to ``max_batch`` frames at
    sizes from 64 px up to twice the input size.
    """
    height, width = input_size
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    profiles = [
        ShapeProfile(min=(b, height, width), opt=(b, height, width), max=(b, height, width))
        for b in batch_sizes
    ]
    profiles.append(
        ShapeProfile(
            min=(1, 64, 64),
            opt=(max_batch, height, width),
            max=(max_batch, max(64, 2 * height), max(64, 2 * width)),
        )
    )
    return tuple(profiles)


def format_ort_shape(name: str, shape: tuple[int, ...]) -> str:
    """A shape in the string form ONNX Runtime's TensorRT provider options take."""
    return f"{name}:" + "x".join(str(v) for v in shape)
