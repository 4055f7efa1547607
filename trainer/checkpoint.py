"""Checkpoints that resume a run exactly, and the weights files other stages load.

A checkpoint holds the model, the running weight average when the run averages
weights (``TrainConfig.average_weights``), optimizer, scheduler and grad-scaler states, both
configs, the number of finished epochs, the metric history, a digest of the
training data and the RNG states (CPU and CUDA), so that a run stopped after epoch
``e`` and resumed equals an uninterrupted one. Files are written atomically (a
temporary file, then a rename) and read with ``weights_only=True``: loading a
checkpoint never runs code from it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alscout.errors import ModelError
from alscout.trainer.config import TrainConfig
from alscout.trainer.data.annotations import Dataset
from alscout.trainer.model import Detector, DetectorConfig

__all__ = [
    "Checkpoint",
    "FORMAT_VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "load_detector",
    "dataset_digest",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """The contents of a checkpoint file; ``epoch`` counts finished epochs."""

    model: dict[str, torch.Tensor]
    detector: DetectorConfig
    train: TrainConfig | None = None
    epoch: int = 0
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    rng: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    data_digest: str = ""
    averaged: dict[str, torch.Tensor] | None = None
    averaged_count: int = 0

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """The weights this run delivers: the weight average once it has begun, else
        the last weights (``model``, which a resumed run continues from)."""
        return self.averaged if self.averaged is not None else self.model

    def build_model(self) -> Detector:
        """A :class:`Detector` with the delivered :attr:`weights` (CPU, eval mode)."""
        model = Detector(self.detector)
        try:
            model.load_state_dict(self.weights)
        except RuntimeError as error:
            raise ModelError(f"weights do not match the detector config: {error}") from error
        return model.eval()


def rng_states() -> dict[str, Any]:
    """The torch RNG states of this process (CPU and every CUDA device)."""
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any]) -> None:
    """Undo :func:`rng_states`; CUDA states are skipped on a machine without CUDA."""
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path | str, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "model": checkpoint.model,
        "detector": checkpoint.detector.to_dict(),
        "train": checkpoint.train.to_dict() if checkpoint.train is not None else None,
        "epoch": checkpoint.epoch,
        "optimizer": checkpoint.optimizer,
        "scheduler": checkpoint.scheduler,
        "scaler": checkpoint.scaler,
        "rng": checkpoint.rng,
        "history": checkpoint.history,
        "data_digest": checkpoint.data_digest,
        "averaged": checkpoint.averaged,
        "averaged_count": checkpoint.averaged_count,
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    log.info("checkpoint saved path=%s epoch=%d", path, checkpoint.epoch)
    return path


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Read a checkpoint, or a bare ``state_dict`` file (default detector config).

    Raises :class:`ModelError` naming the file when it is missing, corrupt or of
    an unknown format.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds on a corrupt or foreign file
        raise ModelError(f"{path}: not a readable checkpoint ({error})") from error
    if not isinstance(payload, dict):
        raise ModelError(f"{path}: expected a dict, found {type(payload).__name__}")
    if "format_version" not in payload:
        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            return Checkpoint(model=payload, detector=DetectorConfig())
        raise ModelError(f"{path}: neither an alscout checkpoint nor a state_dict")
    if payload["format_version"] > FORMAT_VERSION:
        raise ModelError(
            f"{path}: checkpoint format {payload['format_version']} is newer than this "
            f"alscout reads ({FORMAT_VERSION}); upgrade alscout"
        )
    try:
        return Checkpoint(
            model=payload["model"],
            detector=DetectorConfig.from_dict(payload["detector"]),
            train=_train_config(payload["train"]) if payload.get("train") else None,
            epoch=int(payload.get("epoch", 0)),
            optimizer=payload.get("optimizer"),
            scheduler=payload.get("scheduler"),
            scaler=payload.get("scaler"),
            rng=payload.get("rng") or {},
            history=list(payload.get("history") or []),
            data_digest=str(payload.get("data_digest", "")),
            averaged=payload.get("averaged"),
            averaged_count=int(payload.get("averaged_count", 0)),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ModelError(f"{path}: checkpoint is missing or has bad fields ({error})") from error


def _train_config(values: dict[str, Any]) -> TrainConfig:
    """The stored training config; runs from before scale augmentation keep it off,
    runs from before the standardised fit rule keep fitting boxes as given, runs
    from before hard negative mining draw every negative uniformly, runs from before
    weight averaging deliver their last weights, and runs from before scale negatives
    train without them."""
    if "scale_aug" not in values:  # written before zoom and photometric jitter existed
        values = {**values, "scale_aug": False, "photometric": 0.0}
    if "zoom_mode" not in values:  # written before scale-balanced zoom: it zoomed uniformly
        values = {"zoom_range": (0.5, 3.0), **values, "zoom_mode": "uniform"}
    if "hard_negatives" not in values:  # before hard negative mining: all uniform
        values = {**values, "hard_negatives": 0.0}
    if "average_weights" not in values:  # before weight averaging: the last weights
        values = {**values, "average_weights": 0.0}
    targets = values.get("targets")
    if isinstance(targets, dict) and "fit_aspect" not in targets:  # before 2026-12-03:
        targets = {**targets, "fit_aspect": None}  # fit as given
    if isinstance(targets, dict) and "scale_negatives" not in targets:  # before them: off
        targets = {**targets, "scale_negatives": False}
    if isinstance(targets, dict):
        values = {**values, "targets": targets}
    return TrainConfig.from_dict(values)


def load_detector(path: Path | str) -> Detector:
    """The detector stored in a checkpoint or weights file, on the CPU in eval mode."""
    return load_checkpoint(path).build_model()


def dataset_digest(dataset: Dataset, weights: Sequence[float] | None = None) -> str:
    """SHA-256 over every record's source name, frame, size and boxes (hex, 16 chars).

    Names, not file contents: cheap for video datasets, and stable across machines
    that keep the data in different folders. Per-image sampling ``weights`` count too
    unless they are all 1 (so an unweighted run keeps the digest it always had).
    """
    h = hashlib.sha256()
    if weights is not None and any(w != 1 for w in weights):
        h.update(("weights:" + ",".join(f"{w:.6g}" for w in weights) + "\n").encode())
    for r in dataset:
        h.update(f"{Path(r.source).name}|{r.frame}|{r.width}x{r.height}|".encode())
        for b in r.boxes:
            h.update(f"{b.x:.2f},{b.y:.2f},{b.w:.2f},{b.h:.2f},{b.label},{int(b.ignore)};".encode())
        h.update(b"\n")
    return h.hexdigest()[:16]
