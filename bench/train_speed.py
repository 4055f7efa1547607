"""Training speed on the CPU: epoch time of the real loop, and what each trick buys.

Two parts, every figure from the same run on the same frames:

1. ``fit`` itself (the loop ``alscout train`` runs), one epoch after a warm-up epoch,
   on 1 and on 2 PyTorch threads: frames decoded on every access (``cache_images``
   off, no workers: how a run without flags trains), decoded once into memory
   (``--cache-images``), and cached plus one data-loader worker that prepares the
   next batch (targets, sampling, augmentation) while the network trains
   (``--cache-images --workers 1``); and cached with half the negatives mined at each
   step (``--hard-negatives 0.5``: the top-k over each head's logits it adds).
2. One training step (forward, loss, backward, RMSProp) on the same prepared batches
   in float32 against ``channels_last``, bfloat16 autocast and ``torch.compile``
   (``--compile``: its first step compiles for minutes on this box).

PETS09 frames (``--pets``) when present, else the product's synthetic stills.
Run on a quiet box (``uptime``)::

    .venv/bin/python bench/train_speed.py [--frames 160] [--threads 1 2] [--compile]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from alscout.trainer.config import TrainConfig
from alscout.trainer.data.annotations import Dataset
from alscout.trainer.data.formats import read_dataset
from alscout.trainer.model import Detector, DetectorConfig, DetectorLogits, normalise
from alscout.trainer.synth.domain import domain_preset
from alscout.trainer.synth.generate import generate_stills
from alscout.trainer.targets import TrainingSet
from alscout.trainer.training import build_optimizer, fit, sampled_logistic_loss

PETS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pets09_s2l1"
DETECTOR = DetectorConfig(width=8)
BASE = TrainConfig(input_size=(360, 480), batch_size=8, epochs=2)

#: name -> the TrainConfig changes of one loop variant
LOOPS: dict[str, dict[str, object]] = {
    "decoded on every access": {"cache_images": False, "num_workers": 0},
    "cached (--cache-images)": {"cache_images": True, "num_workers": 0},
    "cached + 1 worker (--workers 1)": {"cache_images": True, "num_workers": 1},
    "cached, --hard-negatives 0.5": {"cache_images": True, "num_workers": 0, "hard_negatives": 0.5},
}


def load_frames(pets: Path, count: int, scratch: Path) -> Dataset:
    """``count`` PETS frames, or as many synthetic stills when PETS is absent."""
    if (pets / "gt.txt").is_file():
        return read_dataset(pets / "gt.txt", images=pets / "vtest.avi").subset(range(count))
    print(f"{pets} not found: synthetic stills instead")
    return generate_stills(scratch / "stills", count, domain_preset("source"), 0, 480, 360)


def loop_seconds(data: Dataset, changes: dict[str, object], out: Path) -> float:
    """Seconds of the second epoch of ``fit`` (the first warms caches and allocators)."""
    result = fit(data, DETECTOR, replace(BASE, **changes), out_dir=out, progress=False)
    return float(result.history[-1]["train"]["seconds"])


def prepared_batches(data: Dataset, count: int) -> list[dict[str, torch.Tensor]]:
    items = TrainingSet(data, DETECTOR, replace(BASE, cache_images=True))
    batches = []
    for start in range(0, count * BASE.batch_size, BASE.batch_size):
        group = [items[i % len(items)] for i in range(start, start + BASE.batch_size)]
        batches.append({k: torch.stack([g[k] for g in group]) for k in ("image", "labels", "mask")})
    return batches


def step_seconds(
    batches: list[dict[str, torch.Tensor]],
    channels_last: bool = False,
    autocast: bool = False,
    compiled: bool = False,
) -> tuple[float, float]:
    """(median seconds per step after the first, seconds of the first step)."""
    torch.manual_seed(0)
    model: torch.nn.Module = DetectorLogits(Detector(DETECTOR)).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, BASE)
    forward: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model) if compiled else model
    times = []
    for batch in batches + batches:
        images = normalise(batch["image"], DETECTOR)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = forward(images)
        counts = batch["mask"].sum(dim=(0, 2, 3)).double()
        loss = sampled_logistic_loss(logits.float(), batch["labels"], batch["mask"], counts)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[len(batches) :]), times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pets", type=Path, default=PETS)
    parser.add_argument("--frames", type=int, default=160, help="frames per epoch")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=6, help="batches in the step comparison")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"load average: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as scratch:
        data = load_frames(args.pets, args.frames, Path(scratch))
        steps = len(data) // BASE.batch_size
        print(f"{len(data)} frames, 480x360, width 8, batch 8: {steps} steps per epoch")
        for threads in args.threads:
            torch.set_num_threads(threads)
            print(f"\n## fit, {threads} thread(s): one epoch after a warm-up epoch")
            rows = {}
            for name, changes in LOOPS.items():
                seconds = loop_seconds(data, changes, Path(scratch) / "run")
                rows[name] = seconds
                print(f"{name:34s} {seconds:7.1f} s/epoch  {steps / seconds:5.2f} steps/s")
            base = rows["decoded on every access"]
            for name, seconds in rows.items():
                print(f"  {name:32s} {base / seconds:5.2f}x the uncached loop")
        batches = prepared_batches(data, args.steps)
        for threads in args.threads:
            torch.set_num_threads(threads)
            print(f"\n## one training step, {threads} thread(s), batch 8 (median of {steps})")
            variants: dict[str, dict[str, bool]] = {
                "float32": {},
                "channels_last": {"channels_last": True},
                "bfloat16 autocast": {"autocast": True},
            }
            if args.compile:
                variants["torch.compile"] = {"compiled": True}
            base_step = 0.0
            for name, options in variants.items():
                median, first = step_seconds(batches, **options)
                base_step = base_step or median
                print(
                    f"{name:20s} {median * 1000:7.0f} ms/step  first {first:6.1f} s  "
                    f"{base_step / median:5.2f}x float32"
                )
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
