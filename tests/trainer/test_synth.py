"""The synthetic generator: seeded, boxes that follow the default sizes, a domain shift."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from alscout.errors import ConfigError
from alscout.trainer.data.coco import read_coco
from alscout.trainer.data.images import clear_video_cache, load_image
from alscout.trainer.data.mot import read_mot
from alscout.trainer.model import DetectorConfig
from alscout.trainer.synth import (
    PAPER_DEFAULT_BOXES,
    DomainConfig,
    VideoScene,
    domain_preset,
    draw_pedestrian,
    generate_stills,
    generate_video,
    render_still,
)
from alscout.trainer.synth.figures import random_appearance
from alscout.trainer.targets import count_heads

SOURCE, TARGET = domain_preset("source"), domain_preset("target")


def test_same_seed_same_scene() -> None:
    a_img, a_boxes = render_still(np.random.default_rng(5), SOURCE)
    b_img, b_boxes = render_still(np.random.default_rng(5), SOURCE)
    c_img, _ = render_still(np.random.default_rng(6), SOURCE)
    assert np.array_equal(a_img, b_img) and a_boxes == b_boxes
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == (480, 640, 3) and a_img.dtype == np.uint8


@pytest.mark.parametrize("facing", [-1, 0, 1])
def test_figure_fills_its_box(facing: int) -> None:
    image = np.zeros((300, 200, 3), np.uint8)
    look = random_appearance(np.random.default_rng(0))
    for phase in (0.0, 1.2, 2.5):
        image[:] = 0
        draw_pedestrian(image, (40.0, 20.0, 80.0, 145.0), look, phase, facing)
        ys, xs = np.nonzero(image.any(axis=2))
        # head at the top, feet at the bottom, nothing outside the box
        assert ys.min() == pytest.approx(20, abs=2) and ys.max() == pytest.approx(165, abs=2)
        assert xs.min() >= 38 and xs.max() <= 122  # antialiasing may add a pixel
        assert xs.max() - xs.min() > 0.5 * 80  # shoulders and limbs span the box


def test_box_sizes_follow_default_boxes() -> None:
    rng = np.random.default_rng(0)
    heights, aspects = [], []
    for _ in range(40):
        _, boxes = render_still(rng, SOURCE, 640, 480)
        heights += [b.h for b in boxes]
        aspects += [b.w / b.h for b in boxes]
    defaults = np.array([h for h, _ in PAPER_DEFAULT_BOXES])
    nearest = np.abs(np.array(heights)[:, None] / defaults[None, :] - 1).min(axis=1)
    assert len(heights) > 60
    assert nearest.max() <= SOURCE.size_jitter + 1e-6  # every box is a jittered default box
    used = np.abs(np.array(heights)[:, None] / defaults[None, :] - 1).argmin(axis=1)
    assert set(used.tolist()) == set(range(5))
    assert min(aspects) > 0.5 and max(aspects) < 0.7  # 160/270 .. 31/55 with jitter


@pytest.mark.parametrize("domain", [SOURCE, TARGET])
def test_stills_train_every_head(domain: DomainConfig) -> None:
    """As a training source next to PETS (people 33-96 px of 360: heads 3-4 only), the
    stills give every default box people it trains on, at PETS's 480x360 too."""
    rng = np.random.default_rng(0)
    heads = np.zeros(5, dtype=np.int64)
    for _ in range(40):
        _, boxes = render_still(rng, domain, 480, 360)
        heads += count_heads(boxes, 360, 480, DetectorConfig())
    assert heads.min() >= 0.08 * heads.sum(), heads  # no head starves


def test_boxes_scale_with_image_size() -> None:
    _, boxes = render_still(np.random.default_rng(1), SOURCE.with_(density=6), 320, 240)
    assert boxes and max(b.h for b in boxes) <= 270 / 2 * 1.13
    assert all(b.x >= 0 and b.y >= 0 and b.x2 <= 320 and b.y2 <= 240 for b in boxes)


def _stats(domain: DomainConfig) -> tuple[float, float]:
    rng = np.random.default_rng(3)
    means, sharp = [], []
    for _ in range(6):
        image, _ = render_still(rng, domain, 320, 240)
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        means.append(grey.mean())
        smooth = cv2.GaussianBlur(grey, (0, 0), 2.0)
        sharp.append(np.abs(grey - smooth).mean())  # fine detail: edges and noise
    return float(np.mean(means)), float(np.mean(sharp))


def test_source_and_target_domains_differ() -> None:
    source_mean, _ = _stats(SOURCE)
    target_mean, _ = _stats(TARGET)
    assert target_mean < 0.85 * source_mean  # darker
    # the knob acts one factor at a time: noise adds fine detail, blur removes it
    clean = SOURCE.with_(noise_std=0.0)
    assert _stats(clean.with_(noise_std=10.0))[1] > 1.5 * _stats(clean)[1]
    assert _stats(clean.with_(blur_sigma=2.0))[1] < 0.7 * _stats(clean)[1]
    crowded = SOURCE.with_(density=8.0)
    count = sum(
        len(render_still(np.random.default_rng(i), crowded, 160, 120)[1]) for i in range(10)
    )
    sparse = sum(
        len(render_still(np.random.default_rng(i), SOURCE, 160, 120)[1]) for i in range(10)
    )
    assert count > 1.5 * sparse


def test_domain_validation() -> None:
    with pytest.raises(ConfigError):
        DomainConfig(brightness=0)
    with pytest.raises(ConfigError):
        DomainConfig(noise_std=-1)
    with pytest.raises(ConfigError):
        DomainConfig(sky_palette=((300, 0, 0),))
    with pytest.raises(ConfigError, match="presets"):
        domain_preset("night")


def test_video_walkers_move_enter_leave_and_occlude() -> None:
    scene = VideoScene(np.random.default_rng(2), SOURCE.with_(density=4), 320, 240, fps=15)
    tracks: dict[int, list[tuple[int, float]]] = defaultdict(list)
    ignored = 0
    for t in range(150):
        _, boxes = scene.step()
        for b in boxes:
            tracks[b.track_id].append((t, b.x + b.w / 2))
            ignored += b.ignore
    starts = [v[0][0] for v in tracks.values()]
    ends = [v[-1][0] for v in tracks.values()]
    assert any(s > 0 for s in starts)  # walkers enter
    assert any(e < 149 for e in ends)  # and leave
    assert ignored > 0  # truncated at the edges or occluded
    moving = [v for v in tracks.values() if len(v) > 10 and abs(v[-1][1] - v[0][1]) > 20]
    assert moving
    for v in moving:  # smooth motion: no jumps between consecutive frames
        steps = np.diff([x for _, x in v])
        assert np.abs(steps).max() < 15


def test_generate_video_files(tmp_path: Path) -> None:
    clear_video_cache()
    data = generate_video(tmp_path / "v", 30, TARGET, seed=4, width=320, height=240)
    assert (tmp_path / "v" / "video.avi").is_file()
    back = read_mot(tmp_path / "v" / "gt" / "gt.txt", tmp_path / "v" / "video.avi")
    assert len(back) == 30
    assert [r.boxes for r in back] == [r.boxes for r in data]
    assert read_coco(tmp_path / "v" / "annotations.json").images == data.images
    frame = load_image(data[10])
    assert frame.shape == (240, 320, 3)
    manifest = json.loads((tmp_path / "v" / "synth.json").read_text())
    assert manifest["seed"] == 4 and manifest["domain"]["name"] == "target"
    pngs = generate_video(tmp_path / "p", 5, SOURCE, seed=4, width=160, height=120, container="png")
    mot = read_mot(tmp_path / "p" / "gt" / "gt.txt")  # the MOTChallenge layout
    assert [(r.source, r.boxes) for r in mot] == [(r.source, r.boxes) for r in pngs]
    with pytest.raises(ConfigError):
        generate_video(tmp_path / "x", 5, SOURCE, seed=0, container="gif")


def test_generate_stills_files(tmp_path: Path) -> None:
    data = generate_stills(tmp_path, 4, SOURCE, seed=1, width=160, height=120)
    assert len(list((tmp_path / "images").glob("*.png"))) == 4
    back = read_coco(tmp_path / "annotations.json")
    assert back.images == data.images
    again = generate_stills(tmp_path / "again", 4, SOURCE, seed=1, width=160, height=120)
    assert np.array_equal(load_image(again[3]), load_image(data[3]))


@pytest.mark.slow
def test_two_hundred_frames_take_seconds(tmp_path: Path) -> None:
    start = time.perf_counter()
    generate_video(tmp_path, 200, SOURCE, seed=0)
    assert time.perf_counter() - start < 60
