"""MC dropout with shared features: Detector.sample_probabilities and the AL pool's path.

The T stochastic passes share one encoder-decoder pass; under the same torch seed
they must equal T full forward passes (to 1e-6), and the pool's mc_dropout scores
must equal (to 1e-5) those of the earlier implementation (T passes of a
ScoringPipeline over the PyTorch reference backend, seeded before it was built).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from alscout.errors import InvalidInputError
from alscout.trainer.model import Detector, DetectorConfig

SEED = 11


def _detector(**changes: object) -> Detector:
    torch.manual_seed(5)
    values = {"width": 4, "head_channels": 8, "fires_per_level": 1, **changes}
    return Detector(DetectorConfig(**values)).eval()


@pytest.mark.parametrize("rate", [None, 0.2])
def test_shared_features_equal_sequential_full_passes_bit_for_bit(rate: float | None) -> None:
    model = _detector()
    model.enable_mc_dropout(True, rate)
    x = torch.randn(1, 3, 48, 64)
    samples = 4
    with torch.no_grad():
        torch.manual_seed(SEED)
        sequential = torch.stack([model(x) for _ in range(samples)], 1)
        torch.manual_seed(SEED)
        shared = model.sample_probabilities(x, samples)
    assert shared.shape == (1, samples, 5, 48, 64)
    assert torch.equal(shared, sequential)
    # the passes really differ (dropout is on), and stay probabilities
    assert not torch.equal(shared[:, 0], shared[:, 1])
    assert float(shared.min()) >= 0.0 and float(shared.max()) <= 1.0


def test_a_batch_equals_sequential_full_passes_to_1e6() -> None:
    # The masks are drawn over the whole batch as a forward pass draws them; the
    # blocks run image by image, whose sums may differ in the last bits.
    model = _detector()
    model.enable_mc_dropout(True)
    x = torch.randn(5, 3, 48, 64)
    with torch.no_grad():
        torch.manual_seed(SEED)
        sequential = torch.stack([model(x) for _ in range(3)], 1)
        torch.manual_seed(SEED)
        shared = model.sample_probabilities(x, 3)
        torch.manual_seed(SEED + 1)
        other = model.sample_probabilities(x, 3)
    torch.testing.assert_close(shared, sequential, rtol=0, atol=1e-6)
    assert float((other - sequential).abs().max()) > 1e-3  # other masks: visibly different


def test_sampling_into_a_given_output_tensor() -> None:
    model = _detector()
    model.enable_mc_dropout(True)
    x = torch.randn(2, 3, 32, 32)
    out = torch.full((2, 3, 5, 32, 32), -1.0)
    torch.manual_seed(SEED)
    fresh = model.sample_probabilities(x, 3)
    torch.manual_seed(SEED)
    written = model.sample_probabilities(x, 3, out=out)
    assert written is out and torch.equal(out, fresh)
    with pytest.raises(InvalidInputError, match="out must be"):
        model.sample_probabilities(x, 2, out=out)


def test_the_generator_ends_where_sequential_passes_leave_it() -> None:
    # The next draw after sampling matches: the RNG call order (for t, for k) is kept.
    model = _detector(num_heads=3, default_boxes=((200, 100), (100, 50), (50, 25)))
    model.enable_mc_dropout(True)
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        torch.manual_seed(SEED)
        for _ in range(3):
            model(x)
        after_sequential = torch.rand(4)
        torch.manual_seed(SEED)
        model.sample_probabilities(x, 3)
        after_shared = torch.rand(4)
    assert torch.equal(after_sequential, after_shared)


def test_sampling_needs_mc_dropout_and_valid_arguments() -> None:
    model = _detector()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(InvalidInputError, match="MC dropout"):
        model.sample_probabilities(x, 2)
    model.enable_mc_dropout(True)
    with pytest.raises(InvalidInputError, match="samples"):
        model.sample_probabilities(x, 0)
    with pytest.raises(InvalidInputError, match="N, 3, H, W"):
        model.sample_probabilities(torch.randn(3, 32, 32), 2)


# --- the AL pool's mc_dropout path -------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from alscout.trainer.checkpoint import Checkpoint, save_checkpoint
    from alscout.trainer.config import TrainConfig

    model = _detector(width=2)
    path = tmp_path_factory.mktemp("mc") / "last.pt"
    return save_checkpoint(
        path,
        Checkpoint(
            model=model.state_dict(),
            detector=model.config,
            train=TrainConfig(input_size=(48, 64)),
            data_digest="mc-test",
        ),
    )


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory):
    from alscout.trainer.data.annotations import Dataset, ImageRecord

    folder = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(0)
    records = []
    for i in range(5):  # 72x96 frames: the pipeline resizes them to the 48x64 input
        image = cv2.GaussianBlur(rng.integers(0, 256, (72, 96, 3), np.uint8), (5, 5), 1)
        cv2.imwrite(str(folder / f"{i}.png"), image)
        records.append(ImageRecord(i, folder / f"{i}.png", 96, 72, ()))
    return Dataset(records, name="mc-pool")


def _reference_z(checkpoint: Path, model: Path, pool, positions, scoring, seed: int) -> np.ndarray:
    """The earlier implementation: T passes of a pipeline over the PyTorch backend."""
    from alscout.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from alscout.runtime.backends.torch_reference import TorchBackend
    from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline
    from alscout.runtime.scoring import aggregate, mc_dropout_scores
    from alscout.trainer.checkpoint import load_checkpoint
    from alscout.trainer.data.images import load_image

    info = OnnxRuntimeBackend(model, "cpu").model_info
    config = PipelineConfig(batch_size=scoring.batch_size, double_evaluation=True)
    detector = load_checkpoint(checkpoint).build_model()
    detector.enable_mc_dropout(True, scoring.mc_rate)
    torch.manual_seed(seed)
    backend = TorchBackend(detector, info, threads=1)
    z = np.full(len(pool), np.nan)
    with ScoringPipeline(backend, config) as pipeline:
        for start in range(0, len(positions), scoring.batch_size):
            batch = positions[start : start + scoring.batch_size]
            images = [load_image(pool[p]) for p in batch]
            samples = np.stack(
                [pipeline.probabilities(images) for _ in range(scoring.mc_samples)], 1
            )
            z[batch] = aggregate(mc_dropout_scores(samples), scoring.region, "maxpool")
    return z


def test_pool_mc_dropout_scores_are_unchanged_by_sharing_features(
    checkpoint: Path, pool, tmp_path: Path
) -> None:
    from alscout.trainer.al.config import EvaluationConfig, ScoringConfig
    from alscout.trainer.al.methods import METHODS
    from alscout.trainer.al.pool import export_model, score_pool

    model = export_model(checkpoint, tmp_path / "model.onnx", version="mc")
    scoring = ScoringConfig(batch_size=2, mc_samples=3, region=8)
    positions = [0, 2, 3, 4]  # three batches, the last one short
    got = score_pool(
        model, pool, positions, METHODS["mc_dropout"], scoring, EvaluationConfig(),
        threads=1, checkpoint=checkpoint, seed=4,
    )  # fmt: skip
    expected = _reference_z(checkpoint, model, pool, positions, scoring, seed=4)
    assert np.isnan(got.z[1]) and np.isnan(expected[1])
    np.testing.assert_allclose(got.z[positions], expected[positions], rtol=1e-5, atol=1e-7)
    assert np.all(got.z[positions] > 0)
    # another seed draws other masks: the test above can fail
    other = score_pool(
        model, pool, positions, METHODS["mc_dropout"], scoring, EvaluationConfig(),
        threads=1, checkpoint=checkpoint, seed=5,
    )  # fmt: skip
    assert not np.allclose(other.z[positions], got.z[positions])


def test_pool_mc_dropout_needs_the_checkpoint(checkpoint: Path, pool, tmp_path: Path) -> None:
    from alscout.trainer.al.config import EvaluationConfig, ScoringConfig
    from alscout.trainer.al.methods import METHODS
    from alscout.trainer.al.pool import export_model, score_pool

    model = export_model(checkpoint, tmp_path / "model.onnx", version="mc")
    with pytest.raises(InvalidInputError, match="checkpoint"):
        score_pool(model, pool, [0], METHODS["mc_dropout"], ScoringConfig(), EvaluationConfig())
