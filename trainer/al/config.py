"""Configuration of an active-learning experiment: frozen dataclasses read from one TOML.

Tables: ``[experiment]`` (seeds, methods, cycles K, budget b per cycle, the random
control slice), ``[data.initial]`` / ``[data.pool]`` / ``[data.test]`` (each a
synthetic recipe or an annotation file), ``[detector]`` and ``[train]`` (as
``alscout train --config``: how ``w_l`` is trained), ``[finetune]`` (overrides of
``[train]`` for the per-cycle finetuning), ``[scoring]``, ``[evaluation]`` and
``[oracle]``. Relative paths are resolved against the TOML file's folder after
``$VARIABLE`` and ``~`` expansion.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from alscout.errors import ConfigError
from alscout.trainer.al.methods import METHODS
from alscout.trainer.config import TrainConfig, build_table, read_toml
from alscout.trainer.model import DetectorConfig

__all__ = [
    "DataSpec",
    "ScoringConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "load_experiment",
]

_SYNTH_KINDS = ("stills", "video")
_ORACLES = ("ground_truth", "files", "fleet")


@dataclass(frozen=True)
class DataSpec:
    """One image set: synthetic (``synth`` = "stills" | "video") or read from ``annotations``.

    Synthetic: ``count`` images (frames), ``domain`` preset, ``domain_changes`` (fields
    of the preset's :class:`~alscout.trainer.synth.DomainConfig` to change, e.g.
    ``blur_sigma``), ``seed``, ``size`` (width, height) in pixels. From files:
    ``annotations`` (COCO json, MOT gt.txt, ...), ``images`` (image root, video or frame
    folder), ``frames`` (first, last), 1-based inclusive. ``video``: whether frame
    order is time (temporal rules apply); None infers it (synthetic videos and records
    with a frame number are video).
    """

    synth: str = ""
    count: int = 0
    domain: str = "source"
    seed: int = 0
    size: tuple[int, int] = (640, 480)
    annotations: Path | None = None
    images: Path | None = None
    frames: tuple[int, int] | None = None
    video: bool | None = None
    domain_changes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        if self.frames is not None:
            object.__setattr__(self, "frames", tuple(int(v) for v in self.frames))
            if len(self.frames) != 2 or not 1 <= self.frames[0] <= self.frames[1]:
                raise ConfigError(
                    f"frames must be [first, last] with 1 <= first <= last: {self.frames}"
                )
        if bool(self.synth) == (self.annotations is not None):
            raise ConfigError("a data set needs exactly one of synth = ... or annotations = ...")
        if self.synth and self.synth not in _SYNTH_KINDS:
            raise ConfigError(f"synth must be one of {_SYNTH_KINDS}, got {self.synth!r}")
        if self.synth and self.count < 1:
            raise ConfigError(f"a synthetic data set needs count >= 1, got {self.count}")
        if self.domain_changes:
            from alscout.trainer.synth import domain_preset

            try:
                domain_preset(self.domain).with_(**self.domain_changes)
            except TypeError as error:
                raise ConfigError(f"bad domain_changes: {error}") from error
        if len(self.size) != 2 or min(self.size) < 32:
            raise ConfigError(f"size must be [width, height], each >= 32: {self.size}")


@dataclass(frozen=True)
class ScoringConfig:
    """How the pool is scored and frames are chosen (SPEC §1, §2a).

    ``mc_samples``/``mc_rate``: T stochastic passes and the dropout rate of the
    MC-dropout baseline. ``dt``, ``sigma``, ``dt1``, ``dt2``: temporal smoothing and
    exclusion, in frames. ``batch_size``: frames per inference call. ``quality_gate``:
    measure each scored pool frame (:mod:`alscout.runtime.quality`, default limits) and
    never pick the blurred, dark, overexposed or covered ones. The detection-based
    scores decode detections as ``[evaluation]`` does: candidates above its
    ``threshold``, instances above its ``error_threshold``, NMS at its ``nms_iou``.
    """

    radius: int = 9
    region: int = 30
    double_evaluation: bool = True
    batch_size: int = 8
    mc_samples: int = 10
    mc_rate: float = 0.5
    dt: int = 5
    sigma: float = 2.5
    dt1: int = 15
    dt2: int = 2
    quality_gate: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.quality_gate, bool):
            raise ConfigError(f"quality_gate must be true or false, got {self.quality_gate!r}")
        if self.radius < 0 or self.region < 1 or self.batch_size < 1:
            raise ConfigError("need radius >= 0, region >= 1 and batch_size >= 1")
        if self.mc_samples < 2 or not 0.0 < self.mc_rate < 1.0:
            raise ConfigError("need mc_samples >= 2 and mc_rate in (0, 1)")
        if min(self.dt, self.dt1, self.dt2) < 0 or not self.sigma > 0:
            raise ConfigError("need dt, dt1, dt2 >= 0 and sigma > 0")


@dataclass(frozen=True)
class EvaluationConfig:
    """Caltech evaluation of each cycle's detector, and the per-frame error count.

    ``threshold``/``nms_iou``/``mirror``: as ``alscout evaluate``. ``error_threshold``:
    detections above it count when a frame's false positives plus false negatives are
    counted (the control slice and the rank check).
    """

    threshold: float = 0.05
    nms_iou: float = 0.5
    mirror: bool = False
    error_threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.threshold < 1 or not 0 < self.error_threshold < 1:
            raise ConfigError("threshold must be in [0, 1) and error_threshold in (0, 1)")
        if not 0 <= self.nms_iou <= 1:
            raise ConfigError(f"nms_iou must be in [0, 1], got {self.nms_iou}")


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment; ``out`` is where every run of every seed and method lives.

    ``budget``: b frames per cycle; ``cycles``: K. ``control``: random frames labeled
    per cycle besides the method's (the control slice); ``train_on_control``: whether
    they join the training set. ``include_initial``: finetune on the initial labeled
    set plus the picks (False: the picks only, as the paper). ``threads``: CPU threads
    for PyTorch and ONNX Runtime. ``oracle``: "ground_truth", "files" (a human
    labeling round: the run pauses until the cycle's labels file exists) or "fleet"
    (the same through a fleet label pool and ``alscout fleet export-tasks`` /
    ``import-labels``).
    ``initial_checkpoint``: use this trained detector as ``w_l`` of every seed instead
    of training one on ``initial`` (which then only joins finetuning).
    With the method ``difficulty`` among ``methods`` the detector gets the learned
    difficulty head (``detector.difficulty_head`` is turned on: the head does not change
    what the detector learns, so the other methods' results stay the same); an
    ``initial_checkpoint`` must then have the head already.
    """

    name: str
    out: Path
    initial: DataSpec
    pool: DataSpec
    test: DataSpec
    seeds: tuple[int, ...] = (0,)
    methods: tuple[str, ...] = ("divergence", "guided_random")
    cycles: int = 2
    budget: int = 10
    control: int = 0
    train_on_control: bool = False
    include_initial: bool = True
    threads: int = 1
    oracle: str = "ground_truth"
    initial_checkpoint: Path | None = None
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: TrainConfig = field(default_factory=TrainConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "methods", tuple(self.methods))
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct and not empty: {self.seeds}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ConfigError(
                f"methods must be distinct names from {sorted(METHODS)}, got {self.methods}"
            )
        if self.cycles < 1 or self.budget < 1 or self.control < 0 or self.threads < 1:
            raise ConfigError("need cycles >= 1, budget >= 1, control >= 0 and threads >= 1")
        if self.oracle not in _ORACLES:
            raise ConfigError(f"oracle must be one of {_ORACLES}, got {self.oracle!r}")
        if not self.name or any(c in self.name for c in "/\\"):
            raise ConfigError(f"name must be a plain folder name, got {self.name!r}")
        if "difficulty" in self.methods and not self.detector.difficulty_head:
            object.__setattr__(self, "detector", replace(self.detector, difficulty_head=True))

    def digest(self) -> str:
        """16 hex characters over the settings that change what one seed and method's
        cycles do: a resumed run must match. ``out``, ``seeds``, ``methods``,
        ``cycles`` and ``threads`` are left out, so a run can gain seeds, methods or
        cycles later."""
        values = asdict(self)
        for key in ("out", "seeds", "methods", "cycles", "threads"):
            values.pop(key)
        if not values["scoring"]["quality_gate"]:  # added later: runs without it resume
            values["scoring"].pop("quality_gate")
        if not values["detector"]["difficulty_head"]:  # added later, as quality_gate
            values["detector"].pop("difficulty_head")
        text = json.dumps(values, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _path(value: Any, base: Path, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty path string, got {value!r}")
    path = Path(os.path.expanduser(os.path.expandvars(value)))
    return path if path.is_absolute() else (base / path).resolve()


def _data(values: Any, base: Path, name: str) -> DataSpec:
    values = dict(values) if isinstance(values, dict) else values
    if isinstance(values, dict):
        for key in ("annotations", "images"):
            if key in values:
                values[key] = _path(values[key], base, f"data.{name}.{key}")
    return build_table(DataSpec, values, f"data.{name}")


def load_experiment(path: Path | str, out: Path | str | None = None) -> ExperimentConfig:
    """Read an experiment TOML; ``out`` overrides ``[experiment] out``.

    Raises :class:`ConfigError` naming the file for a missing file, bad TOML, an
    unknown table or key, or a value out of range.
    """
    path = Path(path)
    data = read_toml(path, "experiment config")
    tables = {"experiment", "data", "detector", "train", "finetune", "scoring", "evaluation"}
    unknown = set(data) - tables
    if unknown:
        raise ConfigError(f"{path}: unknown tables {sorted(unknown)}; known: {sorted(tables)}")
    base = path.parent.resolve()
    experiment = dict(data.get("experiment", {}))
    data_tables = dict(data.get("data", {}))
    missing = {"initial", "pool", "test"} - set(data_tables)
    if missing:
        raise ConfigError(f"{path}: missing tables {sorted(f'data.{m}' for m in missing)}")
    if out is not None:
        experiment["out"] = str(out)
    if "out" not in experiment:
        raise ConfigError(f"{path}: [experiment] needs out = <folder> (or pass --out)")
    try:
        experiment["out"] = _path(experiment["out"], Path.cwd() if out else base, "out")
        if "initial_checkpoint" in experiment:
            experiment["initial_checkpoint"] = _path(
                experiment["initial_checkpoint"], base, "initial_checkpoint"
            )
        train = TrainConfig.from_dict(dict(data.get("train", {})))
        finetune = train.with_overrides(**dict(data.get("finetune", {})))
        return build_table(
            ExperimentConfig,
            {
                **experiment,
                "initial": _data(data_tables["initial"], base, "initial"),
                "pool": _data(data_tables["pool"], base, "pool"),
                "test": _data(data_tables["test"], base, "test"),
                "detector": DetectorConfig.from_dict(dict(data.get("detector", {}))),
                "train": train,
                "finetune": finetune,
                "scoring": build_table(ScoringConfig, data.get("scoring", {}), "scoring"),
                "evaluation": build_table(
                    EvaluationConfig, data.get("evaluation", {}), "evaluation"
                ),
            },
            "experiment",
        )
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error
    except TypeError as error:  # replace() with an unknown [finetune] key, a bad type
        raise ConfigError(f"{path}: bad value: {error}") from error
