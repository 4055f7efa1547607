"""Finetune from w_l on the accumulated labeled set, evaluate, export ONNX, publish.

The paper's Step 5: each cycle starts again from the initial weights ``w_l`` and
trains on everything labeled so far: the base labeled set (the data ``w_l`` was
trained on, optional) plus every labeled frame of the pool. :func:`finetune` runs
the training loop of :mod:`alscout.trainer.training` (one process, or one of a
torchrun job: pass its :class:`DistContext`); rank 0 then evaluates
(:func:`evaluate_checkpoint`), exports a verified ONNX file whose metadata version
is the registry's next version (:func:`export_onnx`) and publishes it
(:func:`~alscout.trainer.fleet.publish.publish_model`). The server picks the new
version up by watching the registry or by an admin ``ReloadModel`` call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from alscout.errors import DataError
from alscout.runtime.model_registry import ModelRegistry, ModelVersion
from alscout.trainer.config import TrainConfig
from alscout.trainer.data.annotations import Dataset
from alscout.trainer.distributed import DistContext
from alscout.trainer.fleet.pool import LabelPool
from alscout.trainer.fleet.publish import publish_model, stamp_version

__all__ = [
    "FinetuneResult",
    "labeled_set",
    "finetune",
    "evaluate_checkpoint",
    "export_onnx",
    "publish_model",
    "stamp_version",
    "finetune_and_publish",
]

log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """A finished finetune: its checkpoint, what it trained on, its metrics."""

    checkpoint: Path | None
    train_images: int
    pool_images: int
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


def labeled_set(pool: LabelPool, base: Dataset | None = None) -> Dataset:
    """The accumulated labeled set: ``base`` (if any) then the pool's labeled frames.

    Image ids are renumbered so that the two never collide.
    """
    pooled = pool.to_dataset(labeled_only=True, name="pool")
    images = list(base.images if base is not None else []) + list(pooled.images)
    if not images:
        raise DataError(
            f"{pool.manifest_path}: no labeled frames in the pool and no base set; import "
            "labels first (alscout fleet import-labels)"
        )
    renumbered = [replace(record, image_id=i) for i, record in enumerate(images)]
    name = f"{base.name}+pool" if base is not None else "pool"
    return Dataset(renumbered, name=name, labels=("person",))


def finetune(
    pool: LabelPool,
    init: str | Path,
    out_dir: str | Path,
    train: TrainConfig | None = None,
    *,
    base: Dataset | None = None,
    context: DistContext | None = None,
    progress: bool = False,
) -> FinetuneResult:
    """Train from ``init`` (w_l, a trainer checkpoint) on :func:`labeled_set`.

    ``train``: default, the training config stored in ``init`` (w_l's input size,
    schedule and seed). Writes ``out_dir/last.pt`` (rank 0). Every process of a
    torchrun job calls this with its ``context``.
    """
    from alscout.trainer.checkpoint import load_checkpoint
    from alscout.trainer.training import fit

    data = labeled_set(pool, base)
    start = load_checkpoint(init)
    detector = start.detector
    train = train or start.train or TrainConfig()
    result = fit(
        data,
        detector,
        train,
        out_dir=out_dir,
        init=init,
        context=context,
        progress=progress,
    )
    last = result.history[-1]["train"] if result.history else {}
    metrics = {
        "train_images": len(data),
        "pool_images": len(pool.labeled()),
        "epochs": train.epochs,
        "train_loss": float(last.get("loss", float("nan"))),
        "init": Path(init).name,
    }
    log.info("finetuned images=%d pool=%d out=%s", len(data), len(pool.labeled()), out_dir)
    return FinetuneResult(
        checkpoint=result.checkpoint,
        train_images=len(data),
        pool_images=len(pool.labeled()),
        history=result.history,
        metrics=metrics,
    )


def evaluate_checkpoint(
    checkpoint: str | Path, data: Dataset, threshold: float = 0.05
) -> dict[str, float]:
    """Caltech figures of a checkpoint on ``data``: MR at FPPI 1 and log-average MR."""
    from alscout.trainer.checkpoint import load_checkpoint
    from alscout.trainer.training import evaluate

    state = load_checkpoint(checkpoint)
    size = state.train.input_size if state.train is not None else state.detector.reference_size
    result, _ = evaluate(state.build_model(), data, size, threshold=threshold)
    return {
        "mr_fppi1": float(result.mr_at_fppi1),
        "lamr": float(result.lamr),
        "eval_images": int(result.num_images),
        "eval_gt": int(result.num_gt),
    }


def export_onnx(
    checkpoint: str | Path, out: str | Path, *, version: str, frames: list[Any] | None = None
) -> Path:
    """Export ``checkpoint`` to a verified ONNX file at ``out`` with metadata ``version``.

    ``frames``: real RGB uint8 ``[H, W, 3]`` images to verify on besides random inputs.
    Nothing is written when verification fails (:class:`ModelError`).
    """
    from alscout.trainer.checkpoint_export import export_checkpoint

    out = Path(out)
    report = export_checkpoint(
        checkpoint, out, version=version, missing_digest="unknown", frames=frames or []
    )
    assert report is not None  # verify=True, the default, always reports
    log.info("exported onnx out=%s version=%s %s", out, version, report.describe())
    return out


def finetune_and_publish(
    pool: LabelPool,
    init: str | Path,
    out_dir: str | Path,
    registry: ModelRegistry,
    train: TrainConfig | None = None,
    *,
    base: Dataset | None = None,
    val: Dataset | None = None,
    context: DistContext | None = None,
    notes: str = "",
    progress: bool = False,
) -> ModelVersion | None:
    """:func:`finetune`, then on rank 0: evaluate on ``val``, export, publish.

    Returns the published version (None on ranks other than 0).
    """
    result = finetune(pool, init, out_dir, train, base=base, context=context, progress=progress)
    if context is not None and not context.is_main:
        return None
    if result.checkpoint is None:
        raise DataError(f"{out_dir}: training wrote no checkpoint")
    metrics = dict(result.metrics)
    if val is not None and len(val):
        metrics.update(evaluate_checkpoint(result.checkpoint, val))
    version = registry.next_version()
    frames = _verify_frames(pool)
    onnx_path = export_onnx(
        result.checkpoint, Path(out_dir) / "model.onnx", version=version, frames=frames
    )
    published = publish_model(
        registry,
        onnx_path,
        metrics=metrics,
        notes=notes or f"finetuned from {init}",
        version=version,
    )
    log.info("published version=%s metrics=%s", published.version, metrics)
    return published


def _verify_frames(pool: LabelPool, limit: int = 8) -> list[Any]:
    """A few real pool images to verify the export on."""
    from alscout.trainer.data.images import read_still

    return [read_still(pool.image_path(item)) for item in pool.labeled()[:limit]]
