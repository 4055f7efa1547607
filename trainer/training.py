"""Training and evaluation of the detector: plain functions, one loop (SPEC §3).

Every random choice of an image (mirror or not, which negatives enter the loss) is
drawn from a generator seeded by ``(seed, epoch, image index)``, so it does not
depend on batch composition, worker count or the number of data-parallel processes:
a 2-process run sees the same pixels as a 1-process run at the same global batch,
and a resumed run the same as an uninterrupted one.

The loss per head is the logistic loss summed over the sampled pixels of the whole
global batch and divided by their global count; the heads' losses are summed. With
``TrainConfig.hard_negatives`` a share of each head's negatives is not drawn but taken,
at each step, as the pixels of highest logit (:func:`add_hard_negatives`): a function
of the weights, so resumed runs stay exact.

A detector with the difficulty head (``DetectorConfig.difficulty_head``) also learns
where it errs: each step decodes the batch's detached head probabilities, draws the
error mask of every image and adds the head's balanced loss
(:mod:`alscout.trainer.difficulty`). The head reads detached features, so this loss
changes the head alone: the detector's weights come out as without it. The mask is
deterministic, so resumed runs stay exact.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from alscout.errors import ConfigError, InvalidInputError
from alscout.runtime.detections import NMS_CONTAINED, NMS_IOU
from alscout.trainer import checkpoint as ckpt
from alscout.trainer.config import TrainConfig
from alscout.trainer.data.annotations import Dataset
from alscout.trainer.data.augment import zoom as zoom_image
from alscout.trainer.data.augment import zoom_dataset
from alscout.trainer.data.filters import BoxFilter, filter_dataset
from alscout.trainer.data.images import load_image
from alscout.trainer.difficulty import (
    DifficultyTrainingSet,
    balanced_difficulty_loss,
    error_masks,
)
from alscout.trainer.distributed import (
    DistContext,
    all_reduce_sum,
    make_loader,
    resolve_device,
    wrap_model,
)
from alscout.trainer.evaluation.caltech import (
    CALTECH_ASPECT_RATIO,
    CALTECH_BORDER,
    EvalConfig,
    EvalResult,
    evaluate_records,
)
from alscout.trainer.model import (
    Detector,
    DetectorConfig,
    detect,
    logits_module,
    normalise,
)
from alscout.trainer.targets import NEGATIVE, POSITIVE, TrainingSet

__all__ = [
    "EpochStats",
    "build_optimizer",
    "build_scheduler",
    "sampled_logistic_loss",
    "add_hard_negatives",
    "train_one_epoch",
    "validation_loss",
    "evaluate",
    "FitResult",
    "fit",
]

log = logging.getLogger(__name__)

#: TrainConfig fields that say where a run executes, not what it learns: a resume takes
#: them from its caller (another machine may resume the run), the rest from the checkpoint
RUN_PLACE_FIELDS = ("device", "num_workers", "cache_images")


@dataclass(frozen=True)
class EpochStats:
    """What one pass over a dataset measured (averages over the sampled pixels)."""

    epoch: int
    loss: float
    positives: int
    negatives: int
    mean_prob_positive: float
    mean_prob_negative: float
    lr: float
    seconds: float
    head_boxes: tuple[int, ...] = ()
    head_positives: tuple[int, ...] = ()
    difficulty_loss: float | None = None
    error_fraction: float | None = None

    def to_dict(self) -> dict[str, float | int | list[int]]:
        """Plain values; ``head_boxes`` (boxes that trained each head) and
        ``head_positives`` (positive pixels per head) become lists.
        ``difficulty_loss`` (the difficulty head's balanced loss, mean over steps) and
        ``error_fraction`` (share of pixels in its error masks) only for a detector
        with that head."""
        values = {k: v for k, v in self.__dict__.items() if v is not None}
        values["head_boxes"] = list(self.head_boxes)
        values["head_positives"] = list(self.head_positives)
        return values


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """RMSProp with the paper's learning rate and L2 weight decay."""
    return torch.optim.RMSprop(
        model.parameters(),
        lr=config.lr,
        alpha=config.rmsprop_alpha,
        eps=config.rmsprop_eps,
        weight_decay=config.weight_decay,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.ExponentialLR:
    """Exponential decay, stepped per batch, reaching ``lr_final`` at the last step."""
    total = max(1, config.epochs * steps_per_epoch)
    gamma = (config.lr_final / config.lr) ** (1.0 / max(1, total - 1))
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)


def sampled_logistic_loss(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, counts: torch.Tensor
) -> torch.Tensor:
    """Sum over heads of (logistic loss summed over masked pixels) / ``counts[k]``.

    ``logits``: ``[N, K, H, W]`` float; ``labels``: ``[N, K, H, W]`` int8;
    ``mask``: ``[N, K, H, W]`` bool; ``counts``: ``[K]`` float, the number of masked
    pixels per head over the *global* batch (a head with none contributes 0).
    """
    target = (labels == POSITIVE).to(logits.dtype)
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    per_head = (per_pixel * mask).sum(dim=(0, 2, 3))
    return (per_head / counts.clamp(min=1)).sum()


def add_hard_negatives(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, hard: torch.Tensor | None
) -> torch.Tensor:
    """``mask`` plus, per image and head, the ``hard[n, k]`` negatives of highest logit
    that it does not hold yet (online hard negative mining).

    ``logits``: ``[N, K, H, W]``; ``labels``: ``[N, K, H, W]`` int8; ``mask``:
    ``[N, K, H, W]`` bool; ``hard``: ``[N, K]`` int (a :class:`TrainingSet` item's
    ``hard``, never more than the negatives left out; ``None`` or all zero returns
    ``mask``). Returns a new bool mask.
    """
    if hard is None or not bool(hard.any()):
        return mask
    n, k, h, w = logits.shape
    free = ((labels == NEGATIVE) & ~mask).reshape(n * k, h * w)
    score = logits.detach().float().reshape(n * k, h * w).masked_fill(~free, -math.inf)
    wanted = hard.to(score.device).reshape(n * k, 1)
    top = min(int(wanted.max()), h * w)
    values, index = torch.topk(score, top, dim=1, sorted=True)
    keep = (torch.arange(top, device=score.device) < wanted) & (values > -math.inf)
    extra = torch.zeros_like(free).scatter_(1, index, keep)
    return mask | extra.reshape(mask.shape)


def _prob_sums(
    probs: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, context: DistContext
) -> torch.Tensor:
    """[sum p over masked positives, their count, sum p over masked negatives, count]
    over the global batch, returned on the CPU (the inputs are on the device)."""
    pos = mask & (labels == POSITIVE)
    neg = mask & ~(labels == POSITIVE)
    local = torch.stack([probs[pos].sum(), pos.sum(), probs[neg].sum(), neg.sum()]).double()
    return all_reduce_sum(local, context).cpu()


def _head_sums(heads: torch.Tensor, labels: torch.Tensor, context: DistContext) -> torch.Tensor:
    """``[2, K]`` over the global batch: boxes that train each head, positive pixels.

    ``heads``: ``[N, K]`` (a :class:`TrainingSet` item's ``heads``); ``labels``:
    ``[N, K, H, W]`` on the device. Returned on the CPU.
    """
    local = torch.stack(
        [heads.to(labels.device).sum(dim=0), (labels == POSITIVE).sum(dim=(0, 2, 3))]
    )
    return all_reduce_sum(local.double(), context).cpu()


def _warn_starved_heads(stats: EpochStats, config: DetectorConfig, size: tuple[int, int]) -> None:
    """A WARNING for every head that no box trained in this epoch."""
    boxes = config.boxes_at(*size)
    for k, count in enumerate(stats.head_boxes):
        if count == 0:
            ref_h, ref_w = config.default_boxes[k]
            log.warning(
                "epoch=%d head=%d default_box=%.0fx%.0f (%.0fx%.0f at the %dx%d input) saw no "
                "positives: no training box fits it; zoom in more (--zoom-range) or add a "
                "source with people of that size (--data ... --weight)",
                stats.epoch,
                k,
                ref_h,
                ref_w,
                boxes[k, 0],
                boxes[k, 1],
                size[1],
                size[0],
            )


def train_one_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    epoch: int,
    context: DistContext,
    progress: bool = True,
) -> EpochStats:
    """One pass over ``loader`` (whose sampler and dataset already know ``epoch``).

    ``scaler`` is given for mixed precision on CUDA only. Raises
    :class:`FloatingPointError` when a loss is not finite. A detector with the
    difficulty head trains it too; its batches then need ``truth``
    (:class:`~alscout.trainer.difficulty.DifficultyTrainingSet`).
    """
    if isinstance(model, Detector):
        model = logits_module(model)
    model.train()
    device = context.device
    config: DetectorConfig = _unwrap(model).config
    start = time.perf_counter()
    totals = torch.zeros(5, dtype=torch.float64)  # loss * steps, prob sums (4)
    difficulty = torch.zeros(3, dtype=torch.float64)  # loss * steps, error pixels, pixels
    heads = torch.zeros(2, config.num_heads, dtype=torch.float64)  # boxes, positive pixels
    size = (0, 0)
    steps = 0
    lr = optimizer.param_groups[0]["lr"]
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", disable=not (progress and context.is_main))
    for batch in bar:
        images = normalise(batch["image"], config).to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=scaler is not None):
            outputs = model(images)
        logits, difficulty_logits = outputs if isinstance(outputs, tuple) else (outputs, None)
        mask = add_hard_negatives(logits, labels, mask, batch.get("hard"))
        counts = all_reduce_sum(mask.sum(dim=(0, 2, 3)).double(), context)
        loss = sampled_logistic_loss(logits, labels, mask, counts.to(logits.device))
        global_loss = all_reduce_sum(loss.detach().double(), context)
        if not math.isfinite(float(global_loss)):
            raise FloatingPointError(f"loss is {float(global_loss)} at epoch {epoch + 1}")
        total = loss
        if difficulty_logits is not None:
            errors = _error_targets(logits, batch, config)
            error_counts = all_reduce_sum(
                torch.stack([errors.sum(), (~errors).sum()]).double(), context
            )
            difficulty_loss = balanced_difficulty_loss(
                difficulty_logits, errors, error_counts.to(logits.device)
            )
            global_difficulty = all_reduce_sum(difficulty_loss.detach().double(), context)
            if not math.isfinite(float(global_difficulty)):
                raise FloatingPointError(
                    f"difficulty loss is {float(global_difficulty)} at epoch {epoch + 1}"
                )
            difficulty += torch.stack(
                [global_difficulty, error_counts[0], error_counts.sum()]
            ).cpu()
            total = loss + difficulty_loss
        # Data-parallel averages gradients over processes; scaling by the world size
        # makes the result the gradient of the global-batch loss.
        scaled = total * context.world_size
        if scaler is not None:
            scaler.scale(scaled).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            scaled.backward()
            optimizer.step()
        scheduler.step()
        steps += 1
        totals[0] += float(global_loss)
        with torch.no_grad():
            totals[1:] += _prob_sums(torch.sigmoid(logits), labels, mask, context)
            heads += _head_sums(batch["heads"], labels, context)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        bar.set_postfix(loss=f"{float(global_loss):.4f}")
    stats = _stats(epoch, totals, steps, lr, time.perf_counter() - start, heads)
    if _unwrap(model).has_difficulty:
        stats = replace(
            stats,
            difficulty_loss=float(difficulty[0]) / max(steps, 1),
            error_fraction=float(difficulty[1] / difficulty[2].clamp(min=1)),
        )
    if context.is_main:
        log.info(
            "epoch=%d loss=%.5f p_pos=%.3f p_neg=%.3f lr=%.2e seconds=%.1f",
            epoch + 1,
            stats.loss,
            stats.mean_prob_positive,
            stats.mean_prob_negative,
            stats.lr,
            stats.seconds,
        )
        if stats.difficulty_loss is not None:
            log.info(
                "epoch=%d difficulty_loss=%.5f error_fraction=%.4f",
                epoch + 1,
                stats.difficulty_loss,
                stats.error_fraction,
            )
        log.info(
            "epoch=%d head_boxes=%s head_positives=%s",
            epoch + 1,
            list(stats.head_boxes),
            list(stats.head_positives),
        )
        _warn_starved_heads(stats, config, size)
    return stats


def _error_targets(
    logits: torch.Tensor, batch: dict[str, Any], config: DetectorConfig
) -> torch.Tensor:
    """Error masks ``[N, 1, H, W]`` bool (on the logits' device) of this process's share
    of a batch, from the head probabilities of this very forward pass, detached
    (:func:`~alscout.trainer.difficulty.error_masks`)."""
    if "truth" not in batch:
        raise InvalidInputError(
            "training the difficulty head needs batches with ground truth "
            "(alscout.trainer.difficulty.DifficultyTrainingSet)"
        )
    with torch.no_grad():
        probs = torch.sigmoid(logits.detach().float()).cpu().numpy()
    return torch.from_numpy(error_masks(probs, batch["truth"].numpy(), config)).to(logits.device)


def _stats(
    epoch: int, totals: torch.Tensor, steps: int, lr: float, seconds: float, heads: torch.Tensor
) -> EpochStats:
    loss_sum, pos_p, pos_n, neg_p, neg_n = (float(v) for v in totals)
    return EpochStats(
        epoch=epoch + 1,
        loss=loss_sum / max(steps, 1),
        positives=int(pos_n),
        negatives=int(neg_n),
        mean_prob_positive=pos_p / pos_n if pos_n else float("nan"),
        mean_prob_negative=neg_p / neg_n if neg_n else float("nan"),
        lr=lr,
        seconds=seconds,
        head_boxes=tuple(int(v) for v in heads[0]),
        head_positives=tuple(int(v) for v in heads[1]),
    )


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module, loader: DataLoader, context: DistContext, epoch: int = 0
) -> EpochStats:
    """The training loss and mean probabilities on ``loader``'s sampled pixels, no update.

    Use a :class:`TrainingSet` with ``augment=False``; its seeded negative sampling
    makes the figure repeatable.
    """
    net = _unwrap(model)
    net.eval()
    start = time.perf_counter()
    totals = torch.zeros(5, dtype=torch.float64)
    heads = torch.zeros(2, net.config.num_heads, dtype=torch.float64)
    steps = 0
    for batch in loader:
        images = normalise(batch["image"], net.config).to(context.device)
        labels = batch["labels"].to(context.device)
        logits = net.forward_logits(images)
        mask = batch["mask"].to(context.device)
        mask = add_hard_negatives(logits, labels, mask, batch.get("hard"))
        counts = all_reduce_sum(mask.sum(dim=(0, 2, 3)).double(), context)
        loss = sampled_logistic_loss(logits, labels, mask, counts.to(logits.device))
        totals[0] += float(all_reduce_sum(loss.double(), context))
        totals[1:] += _prob_sums(torch.sigmoid(logits), labels, mask, context)
        heads += _head_sums(batch["heads"], labels, context)
        steps += 1
    return _stats(epoch, totals, steps, float("nan"), time.perf_counter() - start, heads)


def evaluate(
    model: Detector,
    dataset: Dataset,
    input_size: tuple[int, int],
    threshold: float = 0.05,
    nms_iou: float = NMS_IOU,
    mirror: bool = False,
    paper_filters: bool = True,
    batch_size: int = 8,
    progress: bool = False,
    zoom: float = 1.0,
    nms_contained: float = NMS_CONTAINED,
    box_size: str = "head",
    aspect_ratio: float | None = CALTECH_ASPECT_RATIO,
    border: float | None = CALTECH_BORDER,
    subpixel: bool = True,
) -> tuple[EvalResult, list[tuple[np.ndarray, np.ndarray]]]:
    """Detect on every image and score with the Caltech protocol (LAMR, MR at FPPI 1).

    Images are resized to ``input_size`` (height, width) for the network; boxes are
    compared in the stored images' pixels. With ``paper_filters`` the ground truth
    the network cannot represent (under 50 px at 640x480 scale, w/h outside
    [0.2, 0.65], measured at ``input_size``) becomes ignore, as in the paper's
    filtered datasets. ``zoom``: first zoom every image about its centre
    (``augment.zoom``, as training does: > 1 crops and enlarges, < 1 shrinks onto a
    canvas; ground truth follows, boxes cut to under half their area become ignore),
    to check robustness to scale. ``nms_iou``, ``nms_contained``, ``box_size``,
    ``subpixel`` (boxes centred on sub-pixel peaks, :func:`~alscout.trainer.model.detect`): the
    decoder's (:func:`~alscout.runtime.detections.decode_detections`). ``aspect_ratio``:
    the protocol's box standardisation (:class:`~alscout.trainer.evaluation.caltech.EvalConfig`;
    None matches boxes as given) and ``border`` (its frame-edge rule; None: off).
    Returns the result and the per-image detections (in
    the zoomed images' pixels, as decoded: not standardised).
    """
    if zoom != 1.0:
        dataset = zoom_dataset(dataset, zoom)
    if paper_filters:
        height, width = input_size
        rule = BoxFilter.at_input(height, width, model.config.reference_size[0])
        dataset = filter_dataset(dataset, rule)
    detections: list[tuple[np.ndarray, np.ndarray]] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        detections.extend(
            detect(
                model,
                pending,
                input_size,
                threshold,
                nms_iou,
                mirror,
                nms_contained,
                box_size,
                subpixel,
            )
        )
        pending.clear()

    for record in tqdm(dataset, desc="detect", disable=not progress):
        image = load_image(record)
        if zoom != 1.0:
            image, _ = zoom_image(image, (), zoom)
        if pending and (len(pending) == batch_size or image.shape != pending[0].shape):
            flush()
        pending.append(image)
    if pending:
        flush()
    protocol = EvalConfig(aspect_ratio=aspect_ratio, border=border)
    return evaluate_records(detections, dataset.images, protocol), detections


@dataclass
class FitResult:
    """A finished (or paused) run: the trained model, per-epoch metrics, last checkpoint."""

    model: Detector
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None


def fit(
    dataset: Dataset,
    detector: DetectorConfig,
    config: TrainConfig,
    out_dir: Path | str | None = None,
    init: Path | str | None = None,
    resume: Path | str | None = None,
    val: Dataset | None = None,
    context: DistContext | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    weights: Sequence[float] | None = None,
) -> FitResult:
    """Train a detector on ``dataset``; checkpoints go to ``out_dir/last.pt`` (rank 0).

    ``init``: a checkpoint or weights file to start from (the paper's ``w_l`` when
    finetuning; its detector config replaces ``detector``). ``resume``: a checkpoint
    of this run to continue exactly; its configs replace the given ones, except
    :data:`RUN_PLACE_FIELDS` (where the run executes, not what it learns). ``val``:
    evaluated after each epoch. ``stop_after``: finish at most this many epochs in
    this call (the schedule still spans ``config.epochs``). ``context``: this
    process's place in a torchrun job (default: one process on ``config.device``).
    ``weights``: one sampling weight per image of ``dataset`` (several sources in
    one run; see :mod:`alscout.trainer.sampling`); None samples every image once.
    """
    state = ckpt.load_checkpoint(resume) if resume is not None else None
    start_weights = None
    if state is not None:
        where = {name: getattr(config, name) for name in RUN_PLACE_FIELDS}
        detector, config = state.detector, dataclasses.replace(state.train or config, **where)
    elif init is not None:
        start = ckpt.load_checkpoint(init)
        if start.detector != detector:
            log.info("init=%s brings its own detector config; using it", init)
        detector, start_weights = start.detector, start.weights
    context = context or DistContext(device=resolve_device(config.device))
    torch.manual_seed(config.seed)  # the same initial weights in every process
    net = Detector(detector)
    if start_weights is not None:
        net.load_state_dict(start_weights)
    model = wrap_model(logits_module(net), context)
    digest = ckpt.dataset_digest(dataset, weights)
    if state is not None and state.data_digest and state.data_digest != digest:
        raise ConfigError(
            f"{resume} was trained on other data (digest {state.data_digest}, given "
            f"{digest}); resume with the same dataset, or start a new run with --init"
        )
    # A difficulty head learns from the augmented ground truth too (its error masks).
    set_type = DifficultyTrainingSet if detector.difficulty_head else TrainingSet
    train_set = set_type(dataset, detector, config, augment=True)
    if config.cache_images:  # before the loader: forked workers inherit the cache
        train_set.preload(progress and context.is_main)
    loader = make_loader(
        train_set, config.batch_size, context, True, config.seed, config.num_workers, weights
    )
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, len(loader))
    use_amp = config.amp and context.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    history: list[dict[str, Any]] = []
    first_epoch = 0
    torch.manual_seed(config.seed + 1 + context.rank)  # dropout masks differ per process
    if state is not None:
        net.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer or {})
        scheduler.load_state_dict(state.scheduler or {})
        if scaler is not None and state.scaler:
            scaler.load_state_dict(state.scaler)
        ckpt.restore_rng(state.rng)
        history, first_epoch = list(state.history), state.epoch
        log.info("resumed path=%s after_epoch=%d", resume, first_epoch)
    averaged = _weight_average(net, config, state)
    first_averaged = config.first_averaged_epoch() or config.epochs + 1
    val_loader = None
    if val is not None and len(val):
        val_set = TrainingSet(val, detector, config, augment=False)
        val_loader = make_loader(val_set, config.batch_size, context, False, config.seed)
    out = Path(out_dir) if out_dir is not None else None
    last_path = None
    last_epoch = config.epochs
    if stop_after is not None:
        last_epoch = min(last_epoch, first_epoch + stop_after)
    for epoch in range(first_epoch, last_epoch):
        train_set.set_epoch(epoch)
        sampler = loader.sampler
        assert isinstance(sampler, DistributedSampler)  # make_loader's, in every case
        sampler.set_epoch(epoch)
        stats = train_one_epoch(
            model, loader, optimizer, scheduler, scaler, epoch, context, progress
        )
        record: dict[str, Any] = {"train": stats.to_dict()}
        if val_loader is not None:
            record["val"] = validation_loss(model, val_loader, context, epoch).to_dict()
        history.append(record)
        if averaged is not None and epoch + 1 >= first_averaged:
            averaged.update_parameters(net)
        due = (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == last_epoch
        if out is not None and context.is_main and due:
            last_path = ckpt.save_checkpoint(
                out / "last.pt",
                ckpt.Checkpoint(
                    model=net.state_dict(),
                    detector=detector,
                    train=config,
                    epoch=epoch + 1,
                    optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(),
                    scaler=scaler.state_dict() if scaler is not None else None,
                    rng=ckpt.rng_states(),
                    history=history,
                    data_digest=digest,
                    **_average_fields(averaged),
                ),
            )
            (out / "history.json").write_text(json.dumps(history, indent=1), encoding="utf-8")
    delivered = _average_fields(averaged)["averaged"]
    if delivered is not None:
        net.load_state_dict(delivered)
    return FitResult(model=net.eval(), history=history, checkpoint=last_path)


def _weight_average(
    net: Detector, config: TrainConfig, state: ckpt.Checkpoint | None
) -> AveragedModel | None:
    """The running weight average of a run with ``average_weights`` (None without),
    restored from the resumed checkpoint ``state`` when it has one."""
    if config.first_averaged_epoch() is None:
        return None
    averaged = AveragedModel(net, use_buffers=True)
    if state is not None and state.averaged is not None:
        averaged.module.load_state_dict(state.averaged)
        averaged.n_averaged.fill_(state.averaged_count)
    return averaged


def _average_fields(averaged: AveragedModel | None) -> dict[str, Any]:
    """The checkpoint's ``averaged`` and ``averaged_count``: None and 0 until the
    first epoch of the average has finished."""
    if averaged is None or int(averaged.n_averaged) == 0:
        return {"averaged": None, "averaged_count": 0}
    module = averaged.module
    assert isinstance(module, torch.nn.Module)
    return {
        "averaged": module.state_dict(),
        "averaged_count": int(averaged.n_averaged),
    }


def _unwrap(model: torch.nn.Module) -> Detector:
    """The :class:`Detector` inside DDP and :class:`DetectorLogits` wrappers."""
    while not isinstance(model, Detector):
        inner = model.module if hasattr(model, "module") else model.detector
        assert isinstance(inner, torch.nn.Module)  # DDP's module, DetectorLogits' detector
        model = inner
    return model
