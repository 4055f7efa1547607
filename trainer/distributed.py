"""Data-parallel training across GPUs and nodes: torchrun + DistributedDataParallel.

Launch the same command in every process, e.g. on one node with 4 GPUs::

    torchrun --nproc-per-node 4 -m alscout.apps.cli train --data ... --out runs/x

:func:`init_distributed` reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); without it the run is a single
process and nothing here costs anything. Rank 0 alone writes checkpoints and logs
progress. Batches come from a :class:`DistributedSampler` whose shuffling is the same
in a 1-process run, so process ``r`` of ``W`` at step ``s`` holds exactly its share
of the batch a single process would see at step ``s`` (see ``docs/detector.md``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from alscout.errors import ConfigError
from alscout.trainer.sampling import WeightedSampler

__all__ = [
    "DistContext",
    "init_distributed",
    "shutdown",
    "all_reduce_sum",
    "wrap_model",
    "make_loader",
    "resolve_device",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints and logs."""
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> this process's GPU when CUDA is present, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name} asked for, but CUDA is not available here")
    return device


def init_distributed(device: str = "auto", backend: str | None = None) -> DistContext:
    """Join the process group torchrun describes, or return a 1-process context.

    ``backend`` defaults to NCCL on CUDA and gloo on the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device, local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if chosen.type == "cuda" else "gloo"))
    log.info("joined process group rank=%d world_size=%d device=%s", rank, world_size, chosen)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def shutdown(context: DistContext) -> None:
    """Leave the process group (no-op for a single process).

    All ranks meet at a barrier first: a rank that tears gloo down while its peer is
    still sending was seen to abort the peer ("terminate called without an active
    exception") after both had finished their work.
    """
    if context.is_distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """The sum of ``tensor`` over all processes (a copy; the input is unchanged)."""
    if not context.is_distributed:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def wrap_model(model: torch.nn.Module, context: DistContext) -> torch.nn.Module:
    """Move to the device; wrap in DDP (SyncBatchNorm on CUDA) when distributed."""
    model = model.to(context.device)
    if not context.is_distributed:
        return model
    if context.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[context.device])
    return torch.nn.parallel.DistributedDataParallel(model)


def make_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    context: DistContext,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    weights: Sequence[float] | None = None,
) -> DataLoader:
    """A loader giving this process its ``batch_size / world_size`` share of each batch.

    The global ``batch_size`` must divide by the world size. The sampler is a
    :class:`DistributedSampler` in every case (``set_epoch`` reshuffles), so a
    1-process run shuffles exactly as the multi-process one does. ``weights`` (one
    per image, not all 1) switch to :class:`~alscout.trainer.sampling.WeightedSampler`.
    """
    if batch_size % context.world_size:
        raise ConfigError(
            f"batch size {batch_size} does not divide by {context.world_size} processes"
        )
    sampler: DistributedSampler[Any]
    if weights is not None and any(w != 1 for w in weights):
        sampler = WeightedSampler(dataset, weights, context.world_size, context.rank, seed)
    else:
        sampler = DistributedSampler(
            dataset,
            num_replicas=context.world_size,
            rank=context.rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
    return DataLoader(
        dataset,
        batch_size=batch_size // context.world_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=context.device.type == "cuda",
        persistent_workers=False,
    )
