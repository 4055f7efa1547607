"""Training configuration: one frozen dataclass, validated on construction.

Values come from the defaults below, then a TOML file (``[detector]``, ``[train]`` and
``[train.targets]`` tables), then CLI flags; :func:`load_toml` reads the file.
Defaults follow the paper (§4, "Implementation details").
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from alscout.errors import ConfigError
from alscout.trainer.model import DetectorConfig
from alscout.trainer.targets import TargetConfig

__all__ = ["TrainConfig", "ZOOM_MODES", "build_table", "load_toml", "read_toml"]

#: How ``scale_aug`` picks a zoom factor (``TrainConfig.zoom_mode``).
ZOOM_MODES = ("heads", "uniform")


@dataclass(frozen=True)
class TrainConfig:
    """How to train a :class:`~alscout.trainer.model.Detector`.

    ``batch_size`` is the global batch (split over data-parallel processes).
    ``input_size`` is (height, width) in pixels: every image is resized to it, boxes
    scaled alike. ``lr`` decays exponentially, step by step, to ``lr_final`` at the
    last step. ``weight_decay`` is RMSProp's L2 term (gradient += decay * weight).
    ``n2p``: negatives sampled per positive, per head and image; an image with no
    positive in a head still gives ``min_negatives`` negatives there.
    ``hard_negatives``: the fraction of those negatives that are the hardest ones
    (online hard negative mining): at each step, per image and head, the negatives
    of highest logit not drawn uniformly yet (``training.add_hard_negatives``).
    Half by default (docs/detector.md, "Loss"); 0 draws them all uniformly, as the
    paper describes. ``hflip``:
    mirror each image with probability 1/2 (seeded per image and epoch).
    ``scale_aug``: with probability ``zoom_prob``, zoom each image (> 1 crops and
    enlarges, < 1 shrinks onto a canvas of the image's mean colour) so that people of
    every size reach every head. ``zoom_mode`` "heads" (default) draws a head, then a
    person that can train it, then a factor in ``zoom_range`` at which that person
    is assigned to that head (``targets.head_balanced_zoom``: every head gets
    positives at about the same rate whatever the dataset's sizes); "uniform" draws
    the factor log-uniformly from ``zoom_range`` (``augment.random_zoom``).
    ``photometric``: random brightness and contrast, each +-this fraction (0 = off).
    ``detail_loss``: after the zoom, shrink each image by a factor drawn log-uniformly
    in [1, ``detail_loss``] and enlarge it back (``augment.reduce_detail``), so that
    a person's sharpness stops telling their size (1 = off, the default).
    ``average_weights``: the final fraction of the epochs whose end-of-epoch weights
    are averaged (stochastic weight averaging, Izmailov et al. 2018, with
    ``torch.optim.swa_utils.AveragedModel``; batch-norm statistics are averaged
    too); the average is the model the run delivers (0 = off: the last weights). The
    second half by default since 2026-12-04 (two seeds, docs/detector.md, "Loss").
    ``amp``: mixed precision, used on CUDA only. ``device``: "auto", "cpu", "cuda", "cuda:1".
    ``cache_images``: keep each decoded, resized image in memory, read once in file
    order before the first epoch (data loader workers, forked afterwards, share it).
    """

    epochs: int = 50
    batch_size: int = 8
    input_size: tuple[int, int] = (480, 640)
    lr: float = 1e-3
    lr_final: float = 1e-4
    weight_decay: float = 2e-6
    rmsprop_alpha: float = 0.9
    rmsprop_eps: float = 1e-8
    n2p: int = 15
    min_negatives: int = 32
    hard_negatives: float = 0.5
    hflip: bool = True
    scale_aug: bool = True
    zoom_mode: str = "heads"
    zoom_range: tuple[float, float] = (0.25, 4.0)
    zoom_prob: float = 0.5
    photometric: float = 0.2
    detail_loss: float = 1.0
    average_weights: float = 0.5
    seed: int = 0
    amp: bool = True
    device: str = "auto"
    num_workers: int = 0
    cache_images: bool = False
    checkpoint_every: int = 1
    targets: TargetConfig = field(default_factory=TargetConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "zoom_range", tuple(float(v) for v in self.zoom_range))
        if isinstance(self.targets, dict):
            object.__setattr__(self, "targets", build_table(TargetConfig, self.targets, "targets"))
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if len(self.input_size) != 2 or min(self.input_size) < 32:
            raise ConfigError(f"input_size must be (height, width), each >= 32: {self.input_size}")
        for name in ("lr", "lr_final"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 < self.rmsprop_alpha < 1 or self.rmsprop_eps <= 0:
            raise ConfigError("rmsprop_alpha must be in (0, 1) and rmsprop_eps > 0")
        if self.n2p < 1 or self.min_negatives < 0:
            raise ConfigError(f"n2p must be >= 1 and min_negatives >= 0 ({self.n2p}, ...)")
        if not 0.0 <= self.hard_negatives <= 1.0:
            raise ConfigError(f"hard_negatives must be in [0, 1], got {self.hard_negatives}")
        if self.num_workers < 0 or self.checkpoint_every < 1:
            raise ConfigError("num_workers must be >= 0 and checkpoint_every >= 1")
        if len(self.zoom_range) != 2 or not 0 < self.zoom_range[0] <= self.zoom_range[1] < 100:
            raise ConfigError(f"zoom_range must be (low, high), 0 < low <= high: {self.zoom_range}")
        if self.zoom_mode not in ZOOM_MODES:
            raise ConfigError(f"zoom_mode must be one of {ZOOM_MODES}, got {self.zoom_mode!r}")
        if not 0 <= self.zoom_prob <= 1:
            raise ConfigError(f"zoom_prob must be in [0, 1], got {self.zoom_prob}")
        if not 0 <= self.photometric < 1:
            raise ConfigError(f"photometric must be in [0, 1), got {self.photometric}")
        if not 1 <= self.detail_loss < 100:
            raise ConfigError(f"detail_loss must be in [1, 100), got {self.detail_loss}")
        if not 0 <= self.average_weights < 1:
            raise ConfigError(f"average_weights must be in [0, 1), got {self.average_weights}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    def first_averaged_epoch(self) -> int | None:
        """The first epoch (1-based) whose end-of-epoch weights enter the average, or
        None when ``average_weights`` is 0: the last ``round(epochs * average_weights)``
        epochs, at least one."""
        if self.average_weights == 0:
            return None
        return self.epochs - max(1, round(self.epochs * self.average_weights)) + 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-able values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return build_table(cls, values, "train")

    def with_overrides(self, **changes: Any) -> TrainConfig:
        """A copy with the given fields changed (``None`` values are skipped)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def build_table(cls: type, values: Any, table: str) -> Any:
    """``cls(**values)`` for the TOML table ``[table]``: a ConfigError names unknown keys
    and values of the wrong kind."""
    if not isinstance(values, dict):
        raise ConfigError(f"[{table}] must be a table")
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown keys in [{table}]: {sorted(unknown)}; known: {sorted(known)}")
    try:
        return cls(**values)
    except TypeError as error:  # a value of the wrong kind, e.g. a string for a tuple
        raise ConfigError(f"bad value in [{table}]: {error}") from error


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The tables of a TOML file; :class:`ConfigError` names the file (``what`` it is)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: {what} not found") from error
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: not a readable TOML file ({error})") from error


def load_toml(path: Path | str) -> tuple[DetectorConfig, TrainConfig]:
    """Detector and training configs from a TOML file; missing tables keep defaults."""
    path = Path(path)
    data = read_toml(path, "config file")
    unknown = set(data) - {"detector", "train"}
    if unknown:
        raise ConfigError(f"{path}: unknown tables {sorted(unknown)}; use [detector] and [train]")
    try:
        detector = DetectorConfig.from_dict(dict(data.get("detector", {})))
        train = TrainConfig.from_dict(dict(data.get("train", {})))
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error
    except TypeError as error:
        raise ConfigError(f"{path}: bad value in [detector]: {error}") from error
    return detector, train
