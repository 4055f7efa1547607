"""The quality gate: sharp frames pass, blurred / dark / overexposed / covered ones do not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from alscout.errors import ConfigError, InvalidInputError
from alscout.runtime.quality import FrameQuality, QualityConfig, analysis_luma, measure_quality

from naive.quality import naive_quality

GATE = QualityConfig()


def scene(seed: int, width: int = 640, height: int = 480) -> np.ndarray:
    """A sharp synthetic street-like frame: a graded background, textured ground,
    rectangles, ellipses and lines of many colours."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = np.linspace(70, 170, height, dtype=np.float32)[:, None, None].astype(np.uint8)
    ground = rng.integers(60, 140, size=(height - height // 2, width, 3), dtype=np.uint8)
    image[height // 2 :] = cv2.GaussianBlur(ground, (0, 0), 0.7)
    for _ in range(40):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(8, width // 5)), int(rng.integers(8, height // 4))
        shape = rng.integers(3)
        if shape == 0:
            cv2.rectangle(image, (x, y), (x + w, y + h), color, -1)
        elif shape == 1:
            cv2.ellipse(image, (x, y), (w // 2, h // 2), 0, 0, 360, color, -1)
        else:
            cv2.line(image, (x, y), (x + w, y + h), color, int(rng.integers(1, 4)))
    return image


def blurred(image: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma)


def gain(image: np.ndarray, factor: float, offset: float = 0.0) -> np.ndarray:
    return np.clip(image.astype(np.float32) * factor + offset, 0, 255).astype(np.uint8)


def covered(image: np.ndarray, fraction: float) -> np.ndarray:
    out = image.copy()
    out[: int(image.shape[0] * fraction)] = 35
    return out


# ------------------------------------------------------------------ the must-show test


@pytest.mark.parametrize("seed", range(4))
def test_blurred_and_black_frames_are_gated_and_sharp_ones_are_not(seed):
    sharp = scene(seed)
    assert GATE.failures(measure_quality(sharp)) == ()
    assert "blurred" in GATE.failures(measure_quality(blurred(sharp)))
    black = np.zeros_like(sharp)
    assert set(GATE.failures(measure_quality(black))) >= {"blurred", "dark", "covered"}
    assert GATE.failures(measure_quality(gain(sharp, 0.08))) != ()  # nearly black
    # mild degradations a detector copes with pass
    assert GATE.failures(measure_quality(blurred(sharp, 0.6))) == ()
    assert GATE.failures(measure_quality(gain(sharp, 0.5))) == ()


def test_each_check_names_its_degradation():
    sharp = scene(11)
    dark = GATE.failures(measure_quality(gain(sharp, 0.1)))
    assert dark[0] == "dark" and set(dark) <= {"dark", "covered"}  # dark tiles are flat too
    bright = GATE.failures(measure_quality(gain(sharp, 3.0, 60)))
    assert bright[0] == "overexposed" and set(bright) <= {"overexposed", "covered"}  # clipped
    assert GATE.failures(measure_quality(covered(sharp, 0.8))) == ("covered",)
    assert GATE.failures(measure_quality(covered(sharp, 0.3))) == ()


def test_pets_frames_pass_and_their_degradations_do_not(pets_video):
    capture = cv2.VideoCapture(str(pets_video))
    frames = []
    index = 0
    while len(frames) < 40:
        ok, bgr = capture.read()
        if not ok:
            break
        if index % 20 == 0:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        index += 1
    capture.release()
    assert len(frames) == 40
    for frame in frames:
        quality = measure_quality(frame)
        assert GATE.failures(quality) == (), quality
        # the margins docs/scoring.md reports: PETS sits far from every limit
        assert quality.sharpness > 5 * GATE.min_sharpness
        assert quality.covered_fraction < 0.05
        assert GATE.failures(measure_quality(blurred(frame, 2.0))) == ("blurred",)
        assert "dark" in GATE.failures(measure_quality(gain(frame, 0.08)))
        assert GATE.failures(measure_quality(gain(frame, 3.0, 40))) == ("overexposed",)
        assert "covered" in GATE.failures(measure_quality(covered(frame, 0.75)))


# ------------------------------------------------------------------ against the reference


@pytest.mark.parametrize(("seed", "width", "height"), [(0, 640, 480), (1, 333, 211), (2, 97, 50)])
def test_statistics_equal_the_numpy_reference(seed, width, height):
    image = scene(seed, width, height)
    image[: height // 3, : width // 2] = 0  # dark and flat tiles
    image[-height // 4 :, -width // 3 :] = 255  # clipped tiles
    config = QualityConfig(analysis_width=160)
    got = measure_quality(image, config).as_dict()
    want = naive_quality(analysis_luma(image, config.analysis_width))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key
    assert 0 < got["dark_fraction"] < 1 and 0 < got["clipped_fraction"] < 1
    assert 0 < got["covered_fraction"] < 1


def test_statistics_do_not_depend_much_on_frame_size():
    """The luma is measured at one width, so a frame and its 2x version look alike."""
    small = scene(5, 480, 360)
    large = cv2.resize(small, (960, 720), interpolation=cv2.INTER_CUBIC)
    a, b = measure_quality(small), measure_quality(large)
    assert b.sharpness == pytest.approx(a.sharpness, rel=0.25)
    assert b.mean_luma == pytest.approx(a.mean_luma, abs=1.0)


def test_analysis_luma_never_enlarges_and_checks_its_input():
    assert analysis_luma(scene(0, 100, 80), 320).shape == (80, 100)
    assert analysis_luma(scene(0, 640, 480), 320).shape == (240, 320)
    with pytest.raises(InvalidInputError, match="uint8"):
        measure_quality(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(InvalidInputError, match="RGB"):
        measure_quality(np.zeros((8, 8), np.uint8))


def test_config_parse_and_validation():
    assert QualityConfig.parse(None) is None and QualityConfig.parse(False) is None
    assert QualityConfig.parse(True) == QualityConfig()
    parsed = QualityConfig.parse({"min_sharpness": 0.1, "max_covered_fraction": 1})
    assert parsed is not None and parsed.min_sharpness == 0.1
    assert isinstance(parsed.max_covered_fraction, float)
    with pytest.raises(ConfigError, match="unknown quality settings"):
        QualityConfig.parse({"sharpnes": 0.1})
    with pytest.raises(ConfigError, match="fraction"):
        QualityConfig(max_dark_fraction=1.5)
    with pytest.raises(ConfigError, match="min_mean_luma"):
        QualityConfig(min_mean_luma=200, max_mean_luma=100)
    with pytest.raises(ConfigError, match="true, false"):
        QualityConfig.parse("yes")


def test_failures_follow_the_limits():
    q = FrameQuality(
        sharpness=0.2, mean_luma=100, dark_fraction=0.1, clipped_fraction=0.1, covered_fraction=0.1
    )
    assert GATE.failures(q) == ()
    assert QualityConfig(min_sharpness=0.3).failures(q) == ("blurred",)
    assert QualityConfig(max_covered_fraction=0.05).failures(q) == ("covered",)
    assert QualityConfig(max_dark_fraction=0.05, max_clipped_fraction=0.05).failures(q) == (
        "dark",
        "overexposed",
    )
