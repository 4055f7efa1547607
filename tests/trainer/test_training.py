from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from alscout.errors import ConfigError, InvalidInputError, ModelError
from alscout.trainer.checkpoint import (
    Checkpoint,
    dataset_digest,
    load_checkpoint,
    load_detector,
    save_checkpoint,
)
from alscout.trainer.config import TrainConfig, load_toml
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord
from alscout.trainer.data.images import load_image
from alscout.trainer.distributed import DistContext, make_loader
from alscout.trainer.model import Detector, DetectorConfig, predict_probs
from alscout.trainer.targets import IGNORE, NEGATIVE, POSITIVE, TargetConfig, TrainingSet
from alscout.trainer.training import (
    add_hard_negatives,
    build_optimizer,
    build_scheduler,
    evaluate,
    fit,
    sampled_logistic_loss,
    train_one_epoch,
    validation_loss,
)

SIZE = (120, 160)  # (height, width): a quarter of 640x480 on each side
TINY = DetectorConfig(width=4, head_channels=16, fires_per_level=1)
# (height, width) of figures that fit heads 2, 3 and 4 at this size (default boxes / 4).
FIGURES = ((36, 18), (20, 11), (14, 7))


def figure_scenes(
    root: Path, count: int, seed: int = 0, per_image: int = 2, scale: int = 1
) -> Dataset:
    """Blurred-noise images with red 'bodies' and a blue 'head' band, as PNG files.

    ``scale`` multiplies the image size and the figures' sizes.
    """
    rng = np.random.default_rng(seed)
    height, width = SIZE[0] * scale, SIZE[1] * scale
    records = []
    for i in range(count):
        image = cv2.GaussianBlur(
            rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (5, 5), 0
        )
        boxes = []
        for _ in range(per_image):
            bh, bw = (scale * side for side in FIGURES[rng.integers(len(FIGURES))])
            x, y = int(rng.integers(2, width - bw - 2)), int(rng.integers(2, height - bh - 2))
            cv2.rectangle(image, (x, y), (x + bw - 1, y + bh - 1), (230, 40, 40), -1)
            cv2.rectangle(
                image, (x + bw // 4, y), (x + 3 * bw // 4, y + bh // 5), (40, 40, 230), -1
            )
            boxes.append(Box(float(x), float(y), float(bw), float(bh)))
        path = root / f"scene_{seed}_{i:03d}.png"
        cv2.imwrite(str(path), image[:, :, ::-1])
        records.append(ImageRecord(i, path, width, height, tuple(boxes)))
    return Dataset(records, name=f"figures-{seed}")


def config(**changes) -> TrainConfig:
    base = dict(epochs=2, batch_size=4, input_size=SIZE, lr=3e-3, lr_final=3e-4, seed=3)
    return TrainConfig(**{**base, **changes})


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny convolutions gain nothing from threads, and CI machines are shared:
    # two threads on two busy cores run several times slower than one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Dataset:
    return figure_scenes(tmp_path_factory.mktemp("scenes"), 8)


def test_sampled_logistic_loss_by_hand():
    logits = torch.tensor([[[[0.0, 2.0]], [[-1.0, 3.0]]]])  # [1, 2 heads, 1, 2]
    labels = torch.tensor([[[[1, 0]], [[0, -1]]]], dtype=torch.int8)
    mask = torch.tensor([[[[True, True]], [[True, False]]]])
    counts = torch.tensor([4.0, 1.0])  # as if another process held two more pixels of head 0
    head0 = (math.log(2) + math.log1p(math.exp(2.0))) / 4
    head1 = math.log1p(math.exp(-1.0)) / 1
    got = sampled_logistic_loss(logits, labels, mask, counts)
    assert float(got) == pytest.approx(head0 + head1, rel=1e-6)
    assert float(sampled_logistic_loss(logits, labels, mask & False, counts)) == 0.0


def _hard_negatives_reference(logits, labels, mask, hard):
    """Plain NumPy: per image and head, sort the free negatives by logit, take the top."""
    out = mask.copy()
    n, k = hard.shape
    for i in range(n):
        for j in range(k):
            free = np.flatnonzero(((labels[i, j] == NEGATIVE) & ~mask[i, j]).ravel())
            order = free[np.argsort(-logits[i, j].ravel()[free], kind="stable")]
            out[i, j].reshape(-1)[order[: hard[i, j]]] = True
    return out


def test_add_hard_negatives_takes_the_highest_free_negatives_like_numpy():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(3, 5, 12, 16)).astype(np.float32)  # distinct: no ties
    labels = rng.choice([POSITIVE, NEGATIVE, NEGATIVE, NEGATIVE, IGNORE], size=logits.shape)
    labels = labels.astype(np.int8)
    mask = (labels == POSITIVE) | ((labels == NEGATIVE) & (rng.random(logits.shape) < 0.3))
    free = ((labels == NEGATIVE) & ~mask).sum(axis=(2, 3))
    hard = np.minimum(rng.integers(0, 40, size=(3, 5)), free)
    hard[0, 0], hard[2, 4] = 0, free[2, 4]  # none, and every one left
    got = add_hard_negatives(
        torch.from_numpy(logits), torch.from_numpy(labels), torch.from_numpy(mask),
        torch.from_numpy(hard),
    ).numpy()  # fmt: skip
    np.testing.assert_array_equal(got, _hard_negatives_reference(logits, labels, mask, hard))
    added = got & ~mask
    assert (added.sum(axis=(2, 3)) == hard).all()
    assert not (added & (labels != NEGATIVE)).any()  # never a positive or an ignored pixel
    same = torch.from_numpy(mask)
    unchanged = add_hard_negatives(torch.from_numpy(logits), torch.from_numpy(labels), same, None)
    assert unchanged is same


def test_hard_negatives_keep_the_n2p_ratio_and_resume_exactly(scenes, tmp_path):
    cfg = config(epochs=2, scale_aug=False, photometric=0.0, hard_negatives=0.5)
    cfg = replace(cfg, targets=TargetConfig(scale_negatives=False))  # the N2P draw alone
    item = TrainingSet(scenes, TINY, cfg)[0]
    labels, mask = item["labels"], item["mask"]
    positives = (labels == POSITIVE).sum(dim=(1, 2))
    drawn = (mask & (labels == NEGATIVE)).sum(dim=(1, 2))
    wanted = torch.where(positives > 0, cfg.n2p * positives, cfg.min_negatives)
    assert torch.equal(drawn + item["hard"], wanted)  # the step adds the other half
    assert ((item["hard"] - wanted / 2).abs() <= 0.5).all()
    whole = fit(scenes, TINY, cfg, out_dir=tmp_path / "whole", progress=False)
    half = fit(scenes, TINY, cfg, out_dir=tmp_path / "half", stop_after=1, progress=False)
    resumed = fit(
        scenes, TINY, cfg, out_dir=tmp_path / "half", resume=half.checkpoint, progress=False
    )
    _assert_same_state(whole.model.state_dict(), resumed.model.state_dict())
    assert load_checkpoint(resumed.checkpoint).train.hard_negatives == 0.5
    plain = replace(cfg, hard_negatives=0.0)
    uniform = fit(scenes, TINY, plain, progress=False)
    assert whole.history[0]["train"]["negatives"] == uniform.history[0]["train"]["negatives"]
    assert whole.history[0]["train"]["loss"] != uniform.history[0]["train"]["loss"]


def test_scheduler_anneals_exponentially_from_lr_to_lr_final_at_the_last_step():
    model = torch.nn.Linear(2, 1)
    cfg = config(epochs=3, lr=1e-3, lr_final=1e-4)
    optimizer = build_optimizer(model, cfg)
    assert isinstance(optimizer, torch.optim.RMSprop)
    assert optimizer.param_groups[0]["weight_decay"] == cfg.weight_decay == 2e-6
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=5)
    lrs = []
    for _ in range(15):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4)
    ratios = np.array(lrs[1:]) / np.array(lrs[:-1])
    np.testing.assert_allclose(ratios, ratios[0])


def test_training_set_items_are_seeded_per_epoch_and_image(scenes):
    data = TrainingSet(scenes, TINY, config(scale_aug=False, photometric=0.0))
    item = data[0]
    assert item["image"].shape == (*SIZE, 3) and item["image"].dtype == torch.uint8
    assert item["labels"].shape == (5, *SIZE) and item["mask"].shape == (5, *SIZE)
    assert item["heads"].shape == (5,) and int(item["heads"].sum()) == 2
    assert torch.equal(data[0]["mask"], item["mask"])
    flips = []
    for epoch in range(6):
        data.set_epoch(epoch)
        got = data[1]["image"].numpy()
        plain, _ = data.resized(1)
        assert np.array_equal(got, plain) or np.array_equal(got, plain[:, ::-1])
        flips.append(not np.array_equal(got, plain))
    assert any(flips) and not all(flips)
    plain = TrainingSet(scenes, TINY, config(), augment=False)
    for epoch in range(4):
        plain.set_epoch(epoch)
        assert np.array_equal(plain[1]["image"].numpy(), plain.resized(1)[0])


def test_the_full_recipe_zooms_and_jitters_each_image_the_same_way_in_the_same_epoch(scenes):
    data = TrainingSet(scenes, TINY, config(zoom_prob=1.0))
    seen = []
    for epoch in range(3):
        data.set_epoch(epoch)
        a, b = data[2], data[2]
        for key in ("image", "labels", "mask", "heads"):
            assert torch.equal(a[key], b[key]), key
        seen.append(a["image"].numpy())
        plain = data.resized(2)[0]
        assert not np.array_equal(seen[-1], plain) and not np.array_equal(seen[-1], plain[:, ::-1])
    assert not np.array_equal(seen[0], seen[1])


@pytest.mark.slow
@pytest.mark.parametrize("hard_negatives", [0.0, 0.5])
def test_tiny_model_overfits_a_small_synthetic_set(tmp_path, hard_negatives):
    # Half of 640x480: at a quarter, the coarse heads' strides (16 px for head 2)
    # are too coarse for the figures' boxes to be placed within IoU 0.5.
    scenes = figure_scenes(tmp_path, 12, seed=1, scale=2)
    size = (2 * SIZE[0], 2 * SIZE[1])
    # Overfitting is the point: mirroring only, no zoom or photometric jitter.
    plain = {"scale_aug": False, "photometric": 0.0, "hard_negatives": hard_negatives}
    cfg = config(epochs=25, batch_size=4, cache_images=True, input_size=size, **plain)
    result = fit(scenes, TINY, cfg, progress=False)
    first, last = result.history[0]["train"], result.history[-1]["train"]
    if hard_negatives == 0:  # mined negatives are the hardest of the moment: no fixed loss
        assert last["loss"] < first["loss"] / 5
        assert last["mean_prob_positive"] > 0.6 > 0.05 > last["mean_prob_negative"]
    # Pixel level: every figure's centre outscores the background in its own head.
    images = np.stack([cv2.imread(str(r.source))[:, :, ::-1] for r in scenes])
    probs = predict_probs(result.model, images)
    data = TrainingSet(scenes, TINY, cfg, augment=False)
    centre_scores, background = [], []
    for i in range(len(scenes)):
        labels = data[i]["labels"].numpy()
        for k in range(5):
            if (labels[k] == POSITIVE).any():
                centre_scores.append(probs[i, k][labels[k] == POSITIVE].max())
            background.append(probs[i, k][labels[k] == 0])
    assert np.median(centre_scores) > 0.7
    assert np.quantile(np.concatenate(background), 0.99) < 0.3
    # Detection level: the Caltech protocol on the training set itself, boxes as given
    # (the figures have the heads' own aspect) and standardised to 0.41 (dbEval's
    # default, narrower than the figures: a horizontal offset costs more). Missed at
    # FPPI 1 when last measured (2026-12-03), as given / standardised: 3 / 3 of 24 with
    # the default recipe; 6 / 7 with uniform negatives, whose tiny model often scores a
    # figure's centre higher in a smaller head than in its own, so NMS keeps the small
    # box and drops the right one around it (4 / 5 under the NMS before that date).
    given_bound, standard_bound = (0.2, 0.25) if hard_negatives else (0.3, 0.3)
    model = result.model
    given, detections = evaluate(model, scenes, size, aspect_ratio=None)
    assert given.num_gt == 2 * len(scenes)
    assert len(detections) == len(scenes)
    assert given.mr_at_fppi1 <= given_bound, given.to_json()
    standard, _ = evaluate(model, scenes, size)
    assert standard.config["aspect_ratio"] == 0.41
    assert standard.mr_at_fppi1 <= standard_bound, standard.to_json()


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_resume_equals_an_uninterrupted_run(scenes, tmp_path):
    cfg = config(epochs=2)
    whole = fit(scenes, TINY, cfg, out_dir=tmp_path / "whole", progress=False)
    half = fit(scenes, TINY, cfg, out_dir=tmp_path / "half", stop_after=1, progress=False)
    assert len(half.history) == 1 and load_checkpoint(half.checkpoint).epoch == 1
    resumed = fit(
        scenes, TINY, cfg, out_dir=tmp_path / "half", resume=half.checkpoint, progress=False
    )
    _assert_same_state(whole.model.state_dict(), resumed.model.state_dict())
    a, b = load_checkpoint(whole.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a.epoch == b.epoch == 2
    assert a.scheduler == b.scheduler
    for sa, sb in zip(a.optimizer["state"].values(), b.optimizer["state"].values(), strict=True):
        _assert_same_state(sa, sb)
    assert [h["train"]["loss"] for h in a.history] == [h["train"]["loss"] for h in b.history]
    history = json.loads((tmp_path / "half" / "history.json").read_text())
    assert len(history) == 2


def test_weight_averaging_delivers_the_mean_of_the_last_epochs_and_resumes_exactly(
    scenes, tmp_path
):
    """average_weights 0.5 of 4 epochs: the delivered model is the mean of the weights
    (and batch-norm statistics) after epochs 3 and 4, while a resume continues the
    last weights; an interrupted run averages as an uninterrupted one does."""
    cfg = config(epochs=4, average_weights=0.5)
    assert cfg.first_averaged_epoch() == 3
    plain = config(epochs=4)
    three = fit(scenes, TINY, plain, out_dir=tmp_path / "p", stop_after=3, progress=False)
    w3 = load_checkpoint(three.checkpoint).model
    four = fit(scenes, TINY, plain, out_dir=tmp_path / "p", resume=three.checkpoint,
               progress=False)  # fmt: skip
    w4 = load_checkpoint(four.checkpoint).model
    whole = fit(scenes, TINY, cfg, out_dir=tmp_path / "whole", progress=False)
    saved = load_checkpoint(whole.checkpoint)
    _assert_same_state(saved.model, w4)  # training itself is unchanged
    assert saved.averaged_count == 2
    for key, value in saved.averaged.items():
        if value.is_floating_point():
            expected = (w3[key] + w4[key]) / 2
            torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7, msg=key)
    _assert_same_state(whole.model.state_dict(), saved.averaged)
    _assert_same_state(saved.build_model().state_dict(), saved.averaged)
    assert not torch.equal(saved.averaged["logits.weight"], saved.model["logits.weight"])

    first = fit(scenes, TINY, cfg, out_dir=tmp_path / "half", stop_after=2, progress=False)
    assert load_checkpoint(first.checkpoint).averaged is None  # not begun: the last weights
    third = fit(scenes, TINY, cfg, out_dir=tmp_path / "half", resume=first.checkpoint,
                stop_after=1, progress=False)  # fmt: skip
    assert load_checkpoint(third.checkpoint).averaged_count == 1
    resumed = fit(scenes, TINY, cfg, out_dir=tmp_path / "half", resume=third.checkpoint,
                  progress=False)  # fmt: skip
    again = load_checkpoint(resumed.checkpoint)
    _assert_same_state(again.model, saved.model)
    _assert_same_state(again.averaged, saved.averaged)
    assert again.averaged_count == 2

    finetuned = fit(scenes, TINY, config(epochs=1), init=whole.checkpoint, stop_after=0,
                    progress=False)  # fmt: skip
    _assert_same_state(finetuned.model.state_dict(), saved.averaged)  # init takes the average


def test_a_resume_runs_where_it_is_told_and_learns_what_the_run_learned(
    scenes, tmp_path, monkeypatch
):
    """Device, loader workers and image caching are where a run executes, not what it
    learns: a resume (on another machine, say) takes them from its caller; the rest of
    the recipe comes from the checkpoint."""
    half = fit(scenes, TINY, config(epochs=2), out_dir=tmp_path / "r", stop_after=1, progress=False)
    preloads: list[int] = []
    monkeypatch.setattr(TrainingSet, "preload", lambda self, progress=True: preloads.append(1))
    resumed = fit(
        scenes,
        TINY,
        config(epochs=2, cache_images=True, lr=0.5),
        out_dir=tmp_path / "r",
        resume=half.checkpoint,
        progress=False,
    )
    assert preloads == [1]  # the caller's cache_images=True was used
    saved = load_checkpoint(resumed.checkpoint).train
    assert saved.cache_images and saved.lr == config(epochs=2).lr  # lr is the run's


def test_resume_with_zoom_jitter_and_weights_equals_an_uninterrupted_run(scenes, tmp_path):
    cfg = config(epochs=2, zoom_prob=1.0, photometric=0.3)
    weights = [2.0] * 4 + [0.5] * 4  # two sources: the first counts 4 times as much
    whole = fit(scenes, TINY, cfg, out_dir=tmp_path / "whole", progress=False, weights=weights)
    half = fit(
        scenes, TINY, cfg, out_dir=tmp_path / "half", stop_after=1, progress=False, weights=weights
    )
    with pytest.raises(ConfigError, match="other data"):  # the weights are part of the data
        fit(scenes, TINY, cfg, resume=half.checkpoint, progress=False)
    resumed = fit(
        scenes,
        TINY,
        cfg,
        out_dir=tmp_path / "half",
        resume=half.checkpoint,
        progress=False,
        weights=weights,
    )
    _assert_same_state(whole.model.state_dict(), resumed.model.state_dict())
    assert _timeless(whole.history) == _timeless(resumed.history)  # losses, head counts
    assert whole.history[0]["train"]["head_boxes"] != whole.history[1]["train"]["head_boxes"]
    state = load_checkpoint(resumed.checkpoint)
    assert state.train == cfg and state.train.zoom_mode == "heads"


def _timeless(history: list[dict]) -> list[dict]:
    return [{k: {**v, "seconds": 0} for k, v in epoch.items()} for epoch in history]


def test_history_counts_positives_per_head_and_warns_about_starved_heads(scenes, caplog):
    caplog.set_level("INFO", logger="alscout.trainer.training")
    cfg = config(epochs=1, scale_aug=False)
    result = fit(scenes, TINY, cfg, progress=False)
    train = result.history[0]["train"]
    boxes, pixels = train["head_boxes"], train["head_positives"]
    assert boxes[:2] == [0, 0] and min(boxes[2:]) > 0  # the scenes' figures fit heads 2-4
    assert boxes[2] + boxes[3] + boxes[4] == 2 * len(scenes)
    assert pixels[:2] == [0, 0] and min(pixels[2:]) > 0 and sum(pixels) == train["positives"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2
    assert "head=0 default_box=270x160 (68x40 at the 160x120 input)" in warnings[0]
    assert "head=1 default_box=225x130" in warnings[1]
    assert any("head_boxes=[0, 0, " in r.getMessage() for r in caplog.records)


def test_finetuning_starts_from_the_given_weights(scenes, tmp_path):
    # Mirroring only: six epochs of 8 images learn too little under zoom to compare;
    # uniform negatives: mined ones depend on the weights, so losses would not compare.
    plain = {"scale_aug": False, "photometric": 0.0, "hard_negatives": 0.0}
    base = fit(scenes, TINY, config(epochs=6, **plain), out_dir=tmp_path / "base", progress=False)
    other = DetectorConfig(width=8)  # the init file's own config wins
    still = config(epochs=1, lr=1e-9, lr_final=1e-9, **plain)
    tuned = fit(scenes, other, still, init=base.checkpoint, progress=False)
    fresh = fit(scenes, TINY, still, progress=False)
    assert tuned.model.config == TINY
    assert tuned.history[0]["train"]["loss"] < 0.5 * fresh.history[0]["train"]["loss"]
    torch.testing.assert_close(
        tuned.model.state_dict()["logits.weight"],
        base.model.state_dict()["logits.weight"],
        atol=1e-6,
        rtol=0,
    )


def test_validation_is_reported_and_repeatable(scenes, tmp_path):
    val = figure_scenes(tmp_path, 4, seed=9)
    result = fit(scenes, TINY, config(epochs=1), val=val, progress=False)
    reported = result.history[0]["val"]
    assert reported["positives"] > 0 and reported["negatives"] >= 15 * reported["positives"]
    loader = make_loader(
        TrainingSet(val, TINY, config(epochs=1), augment=False), 4, DistContext(), False, 3
    )
    again = validation_loss(result.model, loader, DistContext())
    assert again.loss == pytest.approx(reported["loss"], rel=1e-6)


def test_a_non_finite_loss_raises(scenes):
    model = Detector(TINY)
    with torch.no_grad():
        model.logits.bias.fill_(float("nan"))
    cfg = config(epochs=1)
    loader = make_loader(TrainingSet(scenes, TINY, cfg), 4, DistContext(), True, 0)
    optimizer = build_optimizer(model, cfg)
    with pytest.raises(FloatingPointError, match="loss is nan"):
        train_one_epoch(
            model,
            loader,
            optimizer,
            build_scheduler(optimizer, cfg, 2),
            None,
            0,
            DistContext(),
            False,
        )


def test_checkpoint_files_fail_loudly(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match=r"junk\.pt"):
        load_checkpoint(junk)
    bare = tmp_path / "bare.pt"
    torch.save(Detector(DetectorConfig(width=16)).state_dict(), bare)
    assert isinstance(load_detector(bare), Detector)
    path = save_checkpoint(
        tmp_path / "c.pt", Checkpoint(model=Detector(TINY).state_dict(), detector=TINY)
    )
    assert load_detector(path).config == TINY
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(ModelError, match="newer"):
        load_checkpoint(path)
    mismatched = Checkpoint(model=Detector(TINY).state_dict(), detector=DetectorConfig(width=8))
    with pytest.raises(ModelError, match="do not match"):
        mismatched.build_model()


def test_a_checkpoint_from_before_zoom_resumes_without_it(tmp_path):
    path = save_checkpoint(
        tmp_path / "old.pt",
        Checkpoint(model=Detector(TINY).state_dict(), detector=TINY, train=TrainConfig()),
    )
    payload = torch.load(path, weights_only=True)
    for key in ("scale_aug", "zoom_range", "zoom_prob", "photometric"):
        del payload["train"][key]
    torch.save(payload, path)
    train = load_checkpoint(path).train
    assert train.scale_aug is False and train.photometric == 0.0 and train.hflip


def test_a_checkpoint_from_before_head_zoom_keeps_zooming_uniformly(tmp_path):
    old = TrainConfig(zoom_range=(0.7, 2.0))
    path = save_checkpoint(
        tmp_path / "old.pt", Checkpoint(model=Detector(TINY).state_dict(), detector=TINY, train=old)
    )
    payload = torch.load(path, weights_only=True)
    del payload["train"]["zoom_mode"]
    torch.save(payload, path)
    train = load_checkpoint(path).train
    assert (train.zoom_mode, train.zoom_range, train.scale_aug) == ("uniform", (0.7, 2.0), True)


def test_a_checkpoint_from_before_the_standardised_fit_keeps_fitting_boxes_as_given(tmp_path):
    path = save_checkpoint(
        tmp_path / "old.pt",
        Checkpoint(model=Detector(TINY).state_dict(), detector=TINY, train=TrainConfig()),
    )
    assert load_checkpoint(path).train.targets.fit_aspect == 0.41  # the default now
    payload = torch.load(path, weights_only=True)
    del payload["train"]["targets"]["fit_aspect"]
    torch.save(payload, path)
    train = load_checkpoint(path).train
    assert train.targets.fit_aspect is None and train.targets.fit_iou == 0.5


def test_a_checkpoint_from_before_hard_negatives_draws_every_negative_uniformly(tmp_path):
    path = save_checkpoint(
        tmp_path / "old.pt",
        Checkpoint(
            model=Detector(TINY).state_dict(), detector=TINY, train=TrainConfig(hard_negatives=0.5)
        ),
    )
    assert load_checkpoint(path).train.hard_negatives == 0.5
    payload = torch.load(path, weights_only=True)
    del payload["train"]["hard_negatives"]
    torch.save(payload, path)
    assert load_checkpoint(path).train.hard_negatives == 0.0


def test_a_checkpoint_from_before_weight_averaging_delivers_its_last_weights(tmp_path):
    weights = Detector(TINY).state_dict()
    path = save_checkpoint(
        tmp_path / "old.pt",
        Checkpoint(model=weights, detector=TINY, train=TrainConfig(average_weights=0.5)),
    )
    assert load_checkpoint(path).train.average_weights == 0.5
    payload = torch.load(path, weights_only=True)
    for key in ("averaged", "averaged_count"):
        del payload[key]
    del payload["train"]["average_weights"]
    torch.save(payload, path)
    old = load_checkpoint(path)
    assert old.train.average_weights == 0.0 and old.averaged is None
    _assert_same_state(old.build_model().state_dict(), weights)


def test_a_checkpoint_from_before_scale_negatives_trains_without_them(tmp_path):
    path = save_checkpoint(
        tmp_path / "old.pt",
        Checkpoint(model=Detector(TINY).state_dict(), detector=TINY, train=TrainConfig()),
    )
    assert load_checkpoint(path).train.targets.scale_negatives  # the default now
    payload = torch.load(path, weights_only=True)
    del payload["train"]["targets"]["scale_negatives"]
    torch.save(payload, path)
    assert not load_checkpoint(path).train.targets.scale_negatives


def test_dataset_digest_follows_boxes_not_folders(scenes):
    moved = Dataset(
        [
            r.__class__(r.image_id, Path("/elsewhere") / r.source.name, r.width, r.height, r.boxes)
            for r in scenes
        ]
    )
    assert dataset_digest(moved) == dataset_digest(scenes)
    fewer = scenes.subset(range(7))
    assert dataset_digest(fewer) != dataset_digest(scenes)


def test_train_config_validation_and_toml(tmp_path):
    with pytest.raises(ConfigError):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError):
        TrainConfig(input_size=(16, 640))
    with pytest.raises(ConfigError):
        TrainConfig(device="tpu")
    for bad in (
        {"zoom_range": (2.0, 1.0)},
        {"zoom_range": (0.0, 2.0)},
        {"zoom_prob": 1.5},
        {"zoom_mode": "random"},
    ):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            TrainConfig(**bad)
    with pytest.raises(ConfigError, match="photometric"):
        TrainConfig(photometric=-0.1)
    for bad_share in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="hard_negatives"):
            TrainConfig(hard_negatives=bad_share)
    for bad_share in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="average_weights"):
            TrainConfig(average_weights=bad_share)
    assert TrainConfig(epochs=50, average_weights=0.5).first_averaged_epoch() == 26
    assert TrainConfig(epochs=3, average_weights=0.01).first_averaged_epoch() == 3  # >= 1
    assert TrainConfig(average_weights=0).first_averaged_epoch() is None
    assert TrainConfig(zoom_range=[1, 2]).zoom_range == (1.0, 2.0)  # TOML gives lists
    cfg = TrainConfig(epochs=3, targets=TargetConfig(centre_fraction=0.1))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.with_overrides(epochs=None, batch_size=2).batch_size == 2
    toml = tmp_path / "run.toml"
    toml.write_text(
        "[detector]\nwidth = 8\n\n[train]\nepochs = 7\ninput_size = [240, 320]\n\n"
        "[train.targets]\ncentre_fraction = 0.1\n"
    )
    detector, train = load_toml(toml)
    assert detector.width == 8 and train.epochs == 7 and train.input_size == (240, 320)
    assert train.targets.centre_fraction == 0.1
    toml.write_text("[train]\nepoch = 7\n")
    with pytest.raises(ConfigError, match="epoch"):
        load_toml(toml)
    toml.write_text("[train\n")
    with pytest.raises(ConfigError, match="TOML"):
        load_toml(toml)


def test_preload_fills_the_cache_in_file_order_and_needs_caching(scenes, monkeypatch):
    from alscout.trainer import targets

    with pytest.raises(InvalidInputError, match="cache_images"):
        TrainingSet(scenes, TINY, config()).preload()
    seen = []
    real = targets.load_image
    monkeypatch.setattr(targets, "load_image", lambda r: seen.append(r.image_id) or real(r))
    data = TrainingSet(scenes, TINY, config(cache_images=True))
    data.preload()
    assert seen == [r.image_id for r in scenes]
    data.set_epoch(3)
    data[5]
    assert len(seen) == len(scenes)  # served from memory


def _red_blobs(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An oracle 'detector': the bounding box of each red region, score 1."""
    red = (image[:, :, 0] > 150) & (image[:, :, 1] < 100)
    count, _, stats, _ = cv2.connectedComponentsWithStats(red.astype(np.uint8), connectivity=4)
    boxes = stats[1:count, :4].astype(np.float32)
    return boxes, np.ones(len(boxes), np.float32)


@pytest.mark.parametrize("zoom", [0.5, 1.0, 2.0, 2.5])
def test_evaluate_zooms_images_and_ground_truth_alike(tmp_path, monkeypatch, zoom):
    # Red people on grey frames: the central crops keep the first whole, cut the
    # last to under half (an ignore region) and lose the other two.
    people = [[(70, 40, 20, 40), (150, 10, 16, 36)], [(10, 70, 24, 48), (105, 20, 30, 40)]]
    records = []
    for i, boxes in enumerate(people):
        image = np.full((120, 160, 3), 110, np.uint8)
        for x, y, w, h in boxes:
            image[y : y + h, x : x + w] = (220, 30, 30)
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), image[:, :, ::-1])
        records.append(ImageRecord(i, path, 160, 120, tuple(Box(*b) for b in boxes)))
    data = Dataset(records)
    seen = []

    def oracle(model, images, *args):
        seen.extend(images)
        return [_red_blobs(image) for image in images]

    monkeypatch.setattr("alscout.trainer.training.detect", oracle)
    # border=None: one person runs past the frame's edge; that rule is test_caltech's
    result, detections = evaluate(
        Detector(TINY), data, SIZE, paper_filters=False, zoom=zoom, border=None
    )
    assert all(image.shape == (120, 160, 3) for image in seen)
    # The detections found in the zoomed frames are exactly the zoomed ground truth:
    # no miss, no false positive, whatever the zoom.
    assert result.mr_at_fppi1 == pytest.approx(0.0, abs=1e-9), result.to_json()
    kept, ignored = {0.5: (4, 0), 1.0: (4, 0), 2.0: (1, 1), 2.5: (1, 1)}[zoom]
    assert (result.num_gt, result.num_ignore_gt) == (kept, ignored)
    assert sum(len(boxes) for boxes, _ in detections) == kept + ignored


@pytest.mark.gpu
def test_the_full_recipe_trains_and_evaluates_on_cuda(scenes, tmp_path):
    """The default recipe (zoom, hard negatives, weight averaging, mixed precision, a
    loader worker, validation) on CUDA; its checkpoint loads on the CPU and detects there
    what it detects on the GPU."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (bench/gpu_check.sh's machine); the CPU path is tested above")
    val = figure_scenes(tmp_path, 4, seed=9)
    run = config(device="cuda", num_workers=1, cache_images=True, average_weights=0.5)
    result = fit(scenes, TINY, run, out_dir=tmp_path / "run", val=val, progress=False)
    assert len(result.history) == 2
    for record in result.history:
        assert math.isfinite(record["train"]["loss"]) and math.isfinite(record["val"]["loss"])
        assert record["train"]["positives"] > 0
    assert next(result.model.parameters()).is_cuda
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    on_cpu = state.build_model()
    images = np.stack([load_image(r) for r in val])
    np.testing.assert_allclose(
        predict_probs(on_cpu, images), predict_probs(result.model, images), atol=1e-4
    )
    gpu_result, _ = evaluate(result.model, val, SIZE, mirror=True)
    cpu_result, _ = evaluate(on_cpu, val, SIZE, mirror=True)
    assert gpu_result.num_detections == cpu_result.num_detections
    assert gpu_result.lamr == pytest.approx(cpu_result.lamr, abs=1e-6)
