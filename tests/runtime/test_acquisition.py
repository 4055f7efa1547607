"""alscout.runtime.acquisition: the registry, hand-checked cases and the loop references."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from alscout.errors import ConfigError, InvalidInputError
from alscout.runtime.acquisition import (
    ACQUISITIONS,
    VEHICLE_ACQUISITIONS,
    AcquisitionConfig,
    frame_scores,
    get_acquisition,
    instance_count,
    least_confidence,
    reference_boxes,
)
from alscout.runtime.scoring import image_scores

from naive.acquisition import (
    naive_divergence_count,
    naive_instance_count,
    naive_least_confidence,
)

#: one head whose box is 100 x 50 px at 640x480: 10 x 5 px on a 48 x 64 map
ONE_HEAD = AcquisitionConfig(default_boxes=((100.0, 50.0),))


def blank(h: int = 48, w: int = 64) -> np.ndarray:
    return np.zeros((1, h, w), np.float32)


def smooth_probs(rng: np.random.Generator, k: int, h: int, w: int) -> np.ndarray:
    """Blob-like sigmoid maps: a few peaks of every height, like a detector's."""
    maps = []
    for _ in range(k):
        coarse = rng.normal(-1.5, 2.5, size=(max(2, h // 6), max(2, w // 6))).astype(np.float32)
        logits = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        maps.append(1.0 / (1.0 + np.exp(-logits)))
    return np.stack(maps).astype(np.float32)


# ------------------------------------------------------------------ hand-checked cases


def test_no_candidate_gives_zero_and_no_instances():
    probs = blank()
    probs[0, 5, 5] = 0.04  # under the candidate threshold 0.05
    assert least_confidence(probs, ONE_HEAD) == 0.0
    assert instance_count(probs, ONE_HEAD) == 0


def test_least_confidence_is_the_most_uncertain_candidate():
    probs = blank()
    probs[0, 10, 10] = 0.3  # uncertainty min(0.3, 0.7) = 0.3
    probs[0, 35, 50] = 0.8  # uncertainty 0.2, far away: both kept by NMS
    assert least_confidence(probs, ONE_HEAD) == pytest.approx(0.3)
    assert instance_count(probs, ONE_HEAD) == 1  # only 0.8 > 0.5
    probs[0, 10, 40] = 0.45
    assert least_confidence(probs, ONE_HEAD) == pytest.approx(0.45)
    probs[0, 40, 20] = 0.55  # 1 - max(0.55, 0.45) = 0.45: as uncertain, now a count
    assert least_confidence(probs, ONE_HEAD) == pytest.approx(0.45)
    assert instance_count(probs, ONE_HEAD) == 2


def test_a_candidate_suppressed_by_nms_does_not_count():
    probs = blank()
    probs[0, 20, 20] = 0.9
    probs[0, 22, 20] = 0.4  # a second peak two rows down: its 10 x 5 box overlaps 2/3
    assert least_confidence(probs, ONE_HEAD) == pytest.approx(0.1)
    far = AcquisitionConfig(default_boxes=((100.0, 50.0),), nms_iou=0.95, nms_contained=1.0)
    assert least_confidence(probs, far) == pytest.approx(0.4)  # kept when NMS allows it


def test_instance_count_follows_its_threshold():
    probs = blank()
    for i, value in enumerate((0.2, 0.6, 0.7, 0.95)):
        probs[0, 10 + 10 * (i % 2), 10 + 30 * (i // 2)] = value
    counts = [
        instance_count(probs, AcquisitionConfig(default_boxes=((40.0, 20.0),), count_threshold=t))
        for t in (0.1, 0.5, 0.65, 0.9, 0.99)
    ]
    assert counts == [4, 3, 2, 1, 0]


def test_hybrid_is_divergence_times_one_plus_count():
    rng = np.random.default_rng(3)
    probs = smooth_probs(rng, 1, 48, 64)[np.newaxis]
    probs[0, 0, 5, 5] = 0.97
    probs[0, 0, 40, 60] = 0.99
    div = frame_scores(probs, "divergence", ONE_HEAD).z[0]
    count = instance_count(probs[0], ONE_HEAD)
    assert count >= 2
    hybrid = frame_scores(probs, "divergence_count", ONE_HEAD).z[0]
    assert hybrid == pytest.approx(div * (1 + count), rel=1e-12)


def test_pixel_methods_equal_the_image_scores():
    probs = smooth_probs(np.random.default_rng(0), 5, 40, 52)[np.newaxis].repeat(2, axis=0)
    for method in ("divergence", "entropy"):
        for how in ("maxpool", "mean"):
            config = AcquisitionConfig(radius=4, region=16, aggregation=how)
            got = frame_scores(probs, method, config)
            want = image_scores(probs, 4, 16, method, how)
            np.testing.assert_allclose(got.z, want, rtol=1e-12)
            assert got.maps.shape == (2, 40, 52)


# ------------------------------------------------------------------ against the references


@pytest.mark.parametrize("seed", range(6))
def test_detection_scores_equal_the_loop_references(seed):
    rng = np.random.default_rng(seed)
    k, h, w = 3, 30, 40
    boxes = ((180.0, 100.0), (120.0, 60.0), (60.0, 30.0))
    probs = smooth_probs(rng, k, h, w)
    config = AcquisitionConfig(default_boxes=boxes, radius=3, region=10)
    assert least_confidence(probs, config) == pytest.approx(
        naive_least_confidence(probs, list(boxes)), abs=1e-7
    )
    assert instance_count(probs, config) == naive_instance_count(probs, list(boxes))
    hybrid = frame_scores(probs, "divergence_count", config).z[0]
    assert hybrid == pytest.approx(
        naive_divergence_count(probs, list(boxes), radius=3, region=10), rel=1e-4
    )


def test_the_references_are_not_trivial():
    """The random maps give several candidates and instances, so the test above bites."""
    boxes = [(180.0, 100.0), (120.0, 60.0), (60.0, 30.0)]
    counts = [
        naive_instance_count(smooth_probs(np.random.default_rng(s), 3, 30, 40), boxes)
        for s in range(6)
    ]
    lcs = [
        naive_least_confidence(smooth_probs(np.random.default_rng(s), 3, 30, 40), boxes)
        for s in range(6)
    ]
    assert max(counts) >= 2 and min(lcs) > 0.0 and len(set(lcs)) > 3


def test_a_batch_equals_frames_one_by_one_and_chunks():
    rng = np.random.default_rng(7)
    probs = np.stack([smooth_probs(rng, 5, 36, 48) for _ in range(5)])
    difficulty = np.stack([smooth_probs(rng, 1, 36, 48) for _ in range(5)])
    config = AcquisitionConfig(radius=3, region=12)
    for method in VEHICLE_ACQUISITIONS:
        whole = frame_scores(probs, method, config, difficulty=difficulty)
        single = np.concatenate(
            [
                frame_scores(p, method, config, difficulty=d).z
                for p, d in zip(probs, difficulty, strict=True)
            ]
        )
        chunks = np.concatenate(
            [
                frame_scores(probs[i : i + 2], method, config, difficulty=difficulty[i : i + 2]).z
                for i in (0, 2, 4)
            ]
        )
        np.testing.assert_array_equal(whole.z, single)
        np.testing.assert_array_equal(whole.z, chunks)
        assert whole.z.dtype == np.float64 and whole.z.shape == (5,)
        assert whole.maps.shape == (5, 36, 48) and whole.maps.dtype == np.float32


# ------------------------------------------------------------------ registry and checks


def test_registry_names_every_method_and_mc_dropout_stays_training_side():
    assert set(ACQUISITIONS) == {
        "divergence",
        "entropy",
        "least_confidence",
        "instance_count",
        "divergence_count",
        "difficulty",
        "mc_dropout",
    }
    assert "mc_dropout" not in VEHICLE_ACQUISITIONS
    with pytest.raises(ConfigError, match="alscout al"):
        get_acquisition("mc_dropout", vehicle=True)
    assert get_acquisition("mc_dropout").score is None
    with pytest.raises(ConfigError, match="least_confidence"):
        get_acquisition("margin")
    with pytest.raises(ConfigError, match="alscout al"):
        frame_scores(blank(), "mc_dropout")


def test_bad_inputs_are_refused():
    bad = blank()
    bad[0, 1, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        frame_scores(bad, "least_confidence", ONE_HEAD)
    with pytest.raises(InvalidInputError, match="outside"):
        frame_scores(blank() + 1.5, "instance_count", ONE_HEAD)
    with pytest.raises(InvalidInputError, match="default boxes"):
        frame_scores(np.zeros((2, 8, 8), np.float32), "least_confidence", ONE_HEAD)
    with pytest.raises(ConfigError, match="count_threshold"):
        AcquisitionConfig(count_threshold=1.5)


def test_reference_boxes_rescale_to_640x480():
    boxes = reference_boxes(((54.0, 16.0), (27.0, 8.0)), (96, 128))
    assert boxes == ((270.0, 80.0), (135.0, 40.0))


# ------------------------------------------------------------------ learned difficulty


def test_difficulty_is_the_region_max_pool_of_the_difficulty_map():
    """z = mean over R x R regions (edge regions smaller) of the map's maximum: a loop."""
    rng = np.random.default_rng(11)
    probs = np.stack([smooth_probs(rng, 5, 37, 50) for _ in range(3)])
    difficulty = rng.random((3, 1, 37, 50), dtype=np.float32)
    for region, how in ((12, "maxpool"), (30, "maxpool"), (7, "mean")):
        config = AcquisitionConfig(region=region, aggregation=how)
        got = frame_scores(probs, "difficulty", config, difficulty=difficulty)
        for n in range(3):
            d = difficulty[n, 0].astype(np.float64)
            if how == "mean":
                want = d.mean()
            else:
                maxima = []
                for top in range(0, 37, region):
                    for left in range(0, 50, region):
                        maxima.append(np.max(d[top : top + region, left : left + region]))
                want = np.mean(maxima)
            assert got.z[n] == pytest.approx(want, rel=1e-6)
        np.testing.assert_array_equal(got.maps, difficulty[:, 0])
    # the heads' probabilities do not enter: other probs, same z
    other = frame_scores(probs[::-1].copy(), "difficulty", difficulty=difficulty)
    np.testing.assert_array_equal(
        other.z, frame_scores(probs, "difficulty", difficulty=difficulty).z
    )


def test_difficulty_orders_frames_by_their_hardest_regions():
    calm = np.zeros((1, 1, 60, 60), np.float32)
    one = calm.copy()
    one[0, 0, 5, 5] = 0.8  # one hard region of four
    two = one.copy()
    two[0, 0, 40, 40] = 0.8
    probs = np.zeros((3, 5, 60, 60), np.float32)
    z = frame_scores(probs, "difficulty", difficulty=np.concatenate([calm, one, two])).z
    np.testing.assert_allclose(z, [0.0, 0.2, 0.4])


def test_difficulty_needs_the_maps_of_a_difficulty_head():
    probs = np.zeros((2, 5, 16, 16), np.float32)
    assert get_acquisition("difficulty").needs_difficulty
    assert not any(a.needs_difficulty for n, a in ACQUISITIONS.items() if n != "difficulty")
    with pytest.raises(InvalidInputError, match="difficulty head"):
        frame_scores(probs, "difficulty")
    with pytest.raises(InvalidInputError, match="does not fit"):
        frame_scores(probs, "difficulty", difficulty=np.zeros((2, 1, 16, 8), np.float32))
    with pytest.raises(InvalidInputError, match="does not fit"):
        frame_scores(probs, "difficulty", difficulty=np.zeros((2, 5, 16, 16), np.float32))
    with pytest.raises(InvalidInputError, match="outside"):
        frame_scores(probs, "difficulty", difficulty=np.full((2, 1, 16, 16), 2.0, np.float32))
    with pytest.raises(InvalidInputError, match="rank"):
        frame_scores(probs, "difficulty", difficulty=np.zeros((16, 16), np.float32))
