from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from alscout.errors import ConfigError
from alscout.trainer.distributed import (
    DistContext,
    all_reduce_sum,
    init_distributed,
    make_loader,
    resolve_device,
)

# Trains a tiny detector on generated images; every process of a torchrun job runs
# it, and a plain `python worker.py` is the 1-process reference.
WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import cv2
    import numpy as np
    import torch

    from alscout.trainer.config import TrainConfig
    from alscout.trainer.data.annotations import Box, Dataset, ImageRecord
    from alscout.trainer.distributed import init_distributed, shutdown
    from alscout.trainer.model import DetectorConfig
    from alscout.trainer.training import fit

    def scenes(root, count):
        rng = np.random.default_rng(5)
        records = []
        for i in range(count):
            image = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
            boxes = []
            for _ in range(2):
                h, w = ((30, 15), (16, 9))[rng.integers(2)]
                x, y = int(rng.integers(0, 128 - w)), int(rng.integers(0, 96 - h))
                cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), (220, 30, 30), -1)
                boxes.append(Box(x, y, w, h))
            path = root / f"{i}.png"
            if not path.exists():
                cv2.imwrite(str(path), image)
            records.append(ImageRecord(i, path, 128, 96, tuple(boxes)))
        return Dataset(records)

    torch.set_num_threads(1)
    out, data = Path(sys.argv[1]), Path(sys.argv[2])
    context = init_distributed("cpu")
    dataset = scenes(data, 8)
    config = TrainConfig(epochs=2, batch_size=4, input_size=(96, 128), lr=1e-3, seed=11)
    head = sys.argv[3:] == ["head"]  # the learned difficulty head, trained alongside
    detector = DetectorConfig(width=4, head_channels=8, fires_per_level=1, difficulty_head=head)
    result = fit(dataset, detector, config, out_dir=out, context=context, progress=False)
    if context.is_main:
        torch.save(result.model.state_dict(), out / "weights.pt")
    (out / f"rank{context.rank}-of-{context.world_size}").touch()
    shutdown(context)
    """
)


def _run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("head", [False, True], ids=["plain", "difficulty_head"])
def test_two_gloo_processes_train_the_same_weights_as_one(tmp_path, head):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    data = tmp_path / "data"
    data.mkdir()
    one, two = tmp_path / "one", tmp_path / "two"
    extra = ["head"] if head else []
    _run([sys.executable, str(script), str(one), str(data), *extra], tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    _run([*torchrun, "--nproc-per-node", "2", str(script), str(two), str(data), *extra], tmp_path)
    assert (two / "rank0-of-2").exists() and (two / "rank1-of-2").exists()
    assert (one / "rank0-of-1").exists()
    assert (one / "last.pt").exists() and (two / "last.pt").exists()
    a = torch.load(one / "weights.pt", weights_only=True)
    b = torch.load(two / "weights.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert any(k.startswith("difficulty.") for k in a) is head
    worst = max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())
    # Same pixels and same global normalisation; only the summation order of the
    # gradient all-reduce differs, so the weights agree to float32 rounding.
    assert worst < 1e-5, f"largest weight difference {worst}"
    saved = torch.load(two / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(saved[k], b[k]) for k in b)  # rank 0's checkpoint: final weights


def test_single_process_context_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = init_distributed("cpu")
    assert context == DistContext()
    assert context.is_main and not context.is_distributed
    x = torch.arange(3.0)
    assert all_reduce_sum(x, context) is x
    assert resolve_device("cpu") == torch.device("cpu")


def test_loader_splits_the_global_batch_and_refuses_uneven_splits():
    data = list(range(12))
    two = DistContext(rank=1, world_size=2)
    loader = make_loader(data, 4, two, shuffle=False, seed=0)
    assert [b.tolist() for b in loader] == [[1, 3], [5, 7], [9, 11]]
    one = make_loader(data, 4, DistContext(), shuffle=True, seed=0)
    rank0 = make_loader(data, 4, DistContext(rank=0, world_size=2), shuffle=True, seed=0)
    rank1 = make_loader(data, 4, two, shuffle=True, seed=0)
    for whole, a, b in zip(one, rank0, rank1, strict=True):
        # the two processes hold exactly the single process's batch between them
        assert sorted(whole.tolist()) == sorted(a.tolist() + b.tolist())
    with pytest.raises(ConfigError, match="divide"):
        make_loader(data, 3, two, shuffle=False, seed=0)


def test_asking_for_cuda_without_it_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_device("cuda")
