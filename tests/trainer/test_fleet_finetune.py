from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from alscout.errors import DataError, ModelError
from alscout.runtime.backends import open_backend
from alscout.runtime.model_registry import ModelRegistry
from alscout.trainer.checkpoint import load_checkpoint
from alscout.trainer.config import TrainConfig
from alscout.trainer.fleet.finetune import finetune_and_publish, labeled_set, publish_model
from alscout.trainer.fleet.ingest import ingest
from alscout.trainer.fleet.oracle import oracle_labels
from alscout.trainer.fleet.pool import LabelPool
from alscout.trainer.fleet.tasks import import_labels
from alscout.trainer.model import DetectorConfig
from alscout.trainer.synth import domain_preset, generate_stills, generate_video
from alscout.trainer.training import fit

SIZE = (120, 160)  # (height, width)
TINY = DetectorConfig(width=4, head_channels=16, fires_per_level=1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_config(**changes) -> TrainConfig:
    base = dict(epochs=1, batch_size=4, input_size=SIZE, lr=3e-3, lr_final=3e-4, seed=3)
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def w_l(tmp_path_factory) -> Path:
    """Initial weights: a tiny detector trained one epoch on synthetic stills."""
    root = tmp_path_factory.mktemp("wl")
    data = generate_stills(root / "data", 8, domain_preset("source"), seed=0, width=160, height=120)
    fit(data, TINY, train_config(), out_dir=root / "run", progress=False)
    return root / "run" / "last.pt"


def sink_from_video(video, sink: Path, frames: list[int]) -> None:
    """Upload ``frames`` of a PNG-frame synthetic video in the uploader's layout."""
    for frame in frames:
        data = video[frame].source.read_bytes()
        name = f"{hashlib.sha256(data).hexdigest()}.png"
        (sink / "blobs").mkdir(parents=True, exist_ok=True)
        (sink / "blobs" / name).write_bytes(data)
        record = sink / "frames" / "rec-1" / "cam" / f"{frame:012d}.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(
            json.dumps(
                {
                    "recording_id": "rec-1",
                    "camera_id": "cam",
                    "frame_index": frame,
                    "image_format": "png",
                    "keys": {"image": f"blobs/{name}"},
                }
            )
        )


@pytest.mark.slow
def test_finetune_evaluates_exports_and_publishes(tmp_path, w_l):
    video = generate_video(
        tmp_path / "video",
        60,
        domain_preset("target"),
        seed=4,
        width=160,
        height=120,
        container="png",
    )
    sink_from_video(video, tmp_path / "sink", [5, 25, 45])
    pool = LabelPool(tmp_path / "pool")
    ingest(pool, [tmp_path / "sink"])
    import_labels(pool, oracle_labels(pool, {"rec-1": video}, tmp_path / "labels.json"))
    assert len(pool.labeled()) >= 2
    registry = ModelRegistry(tmp_path / "registry")
    version = finetune_and_publish(
        pool, w_l, tmp_path / "run", registry, train_config(epochs=2), val=video.subset(range(6))
    )
    assert version == registry.latest()
    assert version.version == "v000001"
    assert {"mr_fppi1", "lamr", "train_images", "pool_images", "train_loss"} <= set(version.metrics)
    assert 0.0 <= version.metrics["mr_fppi1"] <= 1.0
    assert version.metrics["pool_images"] == len(pool.labeled())
    version.verify()
    # the published file follows the model contract and names its registry version
    model = onnx.load(str(version.path))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["alscout.model_version"] == "v000001"
    with open_backend(version.path, "onnxruntime-cpu") as backend:
        probs = backend.infer(np.zeros((1, 3, *SIZE), np.float32))
        assert probs.shape == (1, 5, *SIZE)
    # the weights moved away from w_l
    tuned = load_checkpoint(tmp_path / "run" / "last.pt").model
    start = load_checkpoint(w_l).model
    assert any(not torch.equal(tuned[k], start[k]) for k in start)
    # a second cycle publishes the next version
    again = finetune_and_publish(pool, w_l, tmp_path / "run2", registry, train_config())
    assert again.version == "v000002" and "mr_fppi1" not in again.metrics


def test_labeled_set_needs_labels(tmp_path):
    with pytest.raises(DataError, match="no labeled frames"):
        labeled_set(LabelPool(tmp_path / "pool"))


def test_labeled_set_appends_pool_to_base_with_fresh_ids(tmp_path, w_l):
    base = generate_stills(
        tmp_path / "base", 3, domain_preset("source"), seed=1, width=64, height=48
    )
    pool = LabelPool(tmp_path / "pool")
    image = cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))[1].tobytes()
    from alscout.trainer.fleet.pool import PoolItem

    with pool.edit() as state:
        pool.write_image("images/r/c/000000000001.png", image)
        state.items.append(
            PoolItem(
                1, "images/r/c/000000000001.png", "r", "c", 1, 64, 48, "0" * 16, "", "s", boxes=()
            )
        )
    data = labeled_set(pool, base)
    assert [r.image_id for r in data] == [0, 1, 2, 3]
    assert data[3].source == pool.root / "images/r/c/000000000001.png"


def test_publish_refuses_a_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a protobuf at all")
    registry = ModelRegistry(tmp_path / "registry")
    with pytest.raises(ModelError, match=str(bad)):
        publish_model(registry, bad, metrics={})
    assert registry.latest() is None


def labeled_pool(tmp_path: Path, frames: list[int]) -> LabelPool:
    video = generate_video(
        tmp_path / "video", 60, domain_preset("target"), 4, 160, 120, container="png"
    )
    sink_from_video(video, tmp_path / "sink", frames)
    pool = LabelPool(tmp_path / "pool")
    ingest(pool, [tmp_path / "sink"])
    import_labels(pool, oracle_labels(pool, {"rec-1": video}, tmp_path / "labels.json"))
    assert len(pool.labeled()) == len(frames)
    return pool


def run_cli(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_torchrun_finetune_publishes_once_and_matches_one_process(tmp_path, w_l):
    pool = labeled_pool(tmp_path, [5, 25, 45, 59])
    common = ["fleet", "finetune", "--pool", str(pool.root), "--init", str(w_l)]
    common += ["--epochs", "1", "--device", "cpu", "--no-progress"]
    one = [sys.executable, "-m", "alscout.apps.cli", *common]
    one += ["--out", str(tmp_path / "one"), "--registry", str(tmp_path / "reg1")]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    two = [*torchrun, "--nproc-per-node", "2", "-m", "alscout.apps.cli", *common]
    two += ["--out", str(tmp_path / "two"), "--registry", str(tmp_path / "reg2")]
    assert "published version=v000001" in run_cli(one, tmp_path)
    assert run_cli(two, tmp_path).count("published version=v000001") == 1  # rank 0 only
    versions = ModelRegistry(tmp_path / "reg2").versions()
    assert [v.version for v in versions] == ["v000001"]
    x = np.random.default_rng(0).random((2, 3, *SIZE), dtype=np.float32)
    a_path = ModelRegistry(tmp_path / "reg1").latest().path
    with (
        open_backend(a_path, "onnxruntime-cpu") as a,
        open_backend(versions[0].path, "onnxruntime-cpu") as b,
    ):
        np.testing.assert_allclose(a.infer(x), b.infer(x), atol=1e-4)
