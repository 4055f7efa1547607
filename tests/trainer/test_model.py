from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from alscout.errors import ConfigError, InvalidInputError
from alscout.trainer.model import (
    PAPER_DEFAULT_BOXES,
    Detector,
    DetectorConfig,
    DetectorLogits,
    detect,
    normalise,
    predict_probs,
)

TINY = DetectorConfig(width=4, head_channels=8, fires_per_level=1)


@pytest.fixture(scope="module")
def tiny() -> Detector:
    torch.manual_seed(0)
    return Detector(TINY).eval()


def test_config_defaults_are_the_papers():
    config = DetectorConfig()
    assert config.num_heads == 5
    assert config.default_boxes == PAPER_DEFAULT_BOXES
    assert config.default_boxes[0] == (270.0, 160.0) and config.default_boxes[4] == (55.0, 31.0)
    assert config.head_channels == 128


@pytest.mark.parametrize(
    "changes",
    [
        {"num_heads": 4},  # five default boxes for four heads
        {"width": 0},
        {"dropout": 1.0},
        {"norm": "layer"},
        {"std": (0.2, 0.0, 0.2)},
        {"default_boxes": ((1, 1), (0, 2), (3, 3), (4, 4), (5, 5))},
    ],
)
def test_config_rejects_bad_values(changes):
    with pytest.raises(ConfigError):
        DetectorConfig(**changes)


def test_config_round_trips_through_a_dict_and_rejects_unknown_keys():
    config = DetectorConfig(width=8, dropout=0.25, name="x", version="3")
    assert DetectorConfig.from_dict(config.to_dict()) == config
    as_lists = {**config.to_dict(), "default_boxes": [list(b) for b in config.default_boxes]}
    assert DetectorConfig.from_dict(as_lists) == config
    with pytest.raises(ConfigError, match="unknown"):
        DetectorConfig.from_dict({"widht": 8})


def test_boxes_at_scales_the_reference_boxes():
    config = DetectorConfig()
    np.testing.assert_allclose(config.boxes_at(480, 640), np.array(PAPER_DEFAULT_BOXES))
    np.testing.assert_allclose(config.boxes_at(240, 640)[0], [135.0, 160.0])
    np.testing.assert_allclose(config.boxes_at(360, 480)[4], [55 * 0.75, 31 * 0.75])


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (61, 100), (96, 128)])
def test_forward_gives_k_probability_maps_at_the_input_size(tiny, size):
    with torch.no_grad():
        probs = tiny(torch.randn(2, 3, *size))
    assert probs.shape == (2, 5, *size)
    assert probs.dtype == torch.float32
    assert float(probs.min()) >= 0.0 and float(probs.max()) <= 1.0


def test_forward_is_the_sigmoid_of_forward_logits(tiny):
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(tiny(x), torch.sigmoid(tiny.forward_logits(x)))
        torch.testing.assert_close(DetectorLogits(tiny)(x), tiny.forward_logits(x))


def test_one_logits_layer_is_shared_by_every_head():
    model = Detector(TINY).eval()
    logits_params = [n for n in model.state_dict() if n.startswith("logits.")]
    assert logits_params == ["logits.weight", "logits.bias"]
    assert model.logits.weight.shape == (1, 8, 1, 1)
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        before = model.forward_logits(x)
        model.logits.bias += 1.5  # one change moves every head alike
        after = model.forward_logits(x)
    torch.testing.assert_close(after - before, torch.full_like(before, 1.5))


def test_head_zero_sits_on_the_coarsest_level(tiny):
    feats = tiny.features(torch.randn(1, 3, 128, 128))
    sides = [f.shape[-1] for f in feats]
    assert sides == [2, 4, 8, 16, 32]  # strides 64 ... 4


def test_images_are_processed_independently_of_the_batch(tiny):
    # Group normalisation: an image's output does not depend on its batch mates,
    # which is what lets a data-parallel run equal a single-process run.
    x = torch.randn(3, 3, 40, 40)
    with torch.no_grad():
        together = tiny(x)
        alone = tiny(x[1:2])
    torch.testing.assert_close(together[1:2], alone, atol=1e-6, rtol=1e-5)


def test_mc_dropout_makes_passes_differ_and_switches_off_again():
    model = Detector(DetectorConfig(width=4, head_channels=8, dropout=0.0)).eval()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        plain = model(x)
        assert torch.equal(model(x), plain)
        model.enable_mc_dropout(True)
        assert model.mc_dropout and model.dropout.mc_rate == 0.5  # SPEC default
        a, b = model(x), model(x)
        assert not torch.equal(a, b)
        model.enable_mc_dropout(False)
        assert torch.equal(model(x), plain)
    with pytest.raises(InvalidInputError):
        model.enable_mc_dropout(True, rate=1.0)


def test_training_dropout_rate_is_the_mc_default_and_inactive_in_eval():
    model = Detector(DetectorConfig(width=4, head_channels=8, dropout=0.1)).eval()
    model.enable_mc_dropout(True)
    assert model.dropout.mc_rate == 0.1
    model.enable_mc_dropout(False)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_normalise_scales_and_standardises_per_channel():
    config = DetectorConfig(mean=(0.5, 0.0, 1.0), std=(0.5, 1.0, 0.25))
    images = np.zeros((2, 3, 4, 3), dtype=np.uint8)
    images[..., 0] = 255
    images[1, ..., 1] = 51
    out = normalise(images, config)
    assert out.shape == (2, 3, 3, 4) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0], torch.ones(2, 3, 4))  # (1 - 0.5) / 0.5
    torch.testing.assert_close(out[1, 1], torch.full((3, 4), 0.2))
    torch.testing.assert_close(out[:, 2], torch.full((2, 3, 4), -4.0))  # (0 - 1) / 0.25
    assert normalise(images[0], config).shape == (1, 3, 3, 4)


def test_normalise_rejects_floats_and_wrong_shapes():
    with pytest.raises(InvalidInputError, match="uint8"):
        normalise(np.zeros((1, 4, 4, 3), np.float32), DetectorConfig())
    with pytest.raises(InvalidInputError, match=r"\[N, H, W, 3\]"):
        normalise(np.zeros((1, 4, 4, 4), np.uint8), DetectorConfig())


def test_predict_probs_with_mirror_averages_the_flipped_back_maps(tiny):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 40, 52, 3), dtype=np.uint8)
    plain = predict_probs(tiny, images, batch_size=2)
    mirrored = predict_probs(tiny, images[:, :, ::-1].copy(), batch_size=2)[..., ::-1]
    both = predict_probs(tiny, images, batch_size=2, mirror=True)
    assert plain.shape == (3, 5, 40, 52) and plain.dtype == np.float32
    np.testing.assert_allclose(both, 0.5 * (plain + mirrored), atol=1e-6)
    with pytest.raises(InvalidInputError):
        predict_probs(tiny, images.astype(np.float32))


def test_exports_to_onnx_with_dynamic_batch_and_size(tiny):
    ort = pytest.importorskip("onnxruntime")
    buffer = io.BytesIO()
    axes = {0: "n", 2: "h", 3: "w"}
    with warnings.catch_warnings():
        # group norm's batch-size check and the TorchScript exporter's deprecation notice
        # (the dynamo exporter needs onnxscript, which the train extra does not pull in)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            tiny,
            (torch.randn(1, 3, 64, 64),),
            buffer,
            input_names=["images"],
            output_names=["probs"],
            dynamic_axes={"images": axes, "probs": axes},
            opset_version=17,
            dynamo=False,
        )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(2, 3, 33, 47), (1, 3, 97, 130)]:
        x = torch.randn(*shape)
        got = session.run(None, {"images": x.numpy()})[0]
        with torch.no_grad():
            want = tiny(x).numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4)


class _OnePeak(Detector):
    """Head 3 peaks at one pixel of whatever input it gets; other heads stay at 0."""

    def __init__(self, where: tuple[float, float]) -> None:
        super().__init__(TINY)
        self.where = where  # (row, col) as fractions of the input size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        probs = torch.zeros(n, 5, h, w)
        probs[:, 3, int(self.where[0] * h), int(self.where[1] * w)] = 0.9
        return probs


def test_detect_decodes_at_the_input_size_and_maps_boxes_back_to_the_image():
    model = _OnePeak((0.5, 0.25))
    images = [np.zeros((240, 320, 3), np.uint8)] * 2
    dets = detect(model, images, input_size=(120, 160), threshold=0.5)
    assert len(dets) == 2
    boxes, scores = dets[0]
    assert scores.tolist() == pytest.approx([0.9])
    # head 3 is 80x50 at 640x480, 20x12.5 at 160x120; centred on pixel (60, 40) + 0.5,
    # then doubled back to the 320x240 image
    np.testing.assert_allclose(boxes[0], [2 * (40.5 - 6.25), 2 * (60.5 - 10), 25, 40], rtol=1e-5)
    same = detect(model, images, threshold=0.5)[0][0]  # no resizing: decoded at 320x240
    np.testing.assert_allclose(same[0], [80.5 - 12.5, 120.5 - 20, 25, 40], rtol=1e-5)
    assert detect(model, [], threshold=0.5) == []
    assert detect(model, images, threshold=0.95)[0][0].shape == (0, 4)
    with pytest.raises(InvalidInputError, match="one size"):
        detect(model, [images[0], np.zeros((10, 10, 3), np.uint8)])


@pytest.mark.parametrize("num_heads", [3, 5])
def test_head_strides_are_the_input_over_each_heads_map(num_heads):
    """``head_strides`` (what the decoder refines peaks with) is the true ratio of the
    input to the map each head is computed on, head 0 the coarsest."""
    config = DetectorConfig(
        width=4,
        num_heads=num_heads,
        default_boxes=PAPER_DEFAULT_BOXES[:num_heads],
        head_channels=8,
        fires_per_level=0,
    )
    maps = Detector(config).features(torch.zeros(1, 3, 256, 384))
    assert config.head_strides == tuple(384 // m.shape[-1] for m in maps)
    assert config.head_strides == tuple(256 // m.shape[-2] for m in maps)
    if num_heads == 5:
        assert config.head_strides == (64, 32, 16, 8, 4)
