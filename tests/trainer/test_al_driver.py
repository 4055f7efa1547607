"""The cycle driver end to end on configs/al/tiny.toml: outputs, resume, repeatability."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from alscout.errors import ConfigError
from alscout.trainer.al.config import load_experiment
from alscout.trainer.al.driver import run_experiment
from alscout.trainer.al.oracle import LabelingPending

TINY = Path(__file__).resolve().parents[2] / "configs/al/tiny.toml"


def _state(out: Path, method: str) -> dict:
    return json.loads((out / "seed0" / method / "state.json").read_text())


@pytest.mark.slow
def test_tiny_experiment_runs_resumes_and_repeats(tmp_path: Path) -> None:
    config = load_experiment(TINY, out=tmp_path / "a")
    summary = run_experiment(config)
    out = config.out
    assert summary == out / "summary.md"
    text = summary.read_text()
    assert "## Miss rate at FPPI = 1" in text and "mc_dropout" in text
    for method in config.methods:
        state = _state(out, method)
        assert [c["cycle"] for c in state["cycles"]] == [1, 2]
        first, second = (c["picks"] for c in state["cycles"])
        assert len(first) == len(second) == 3
        assert all(abs(a - b) > 1 for a in second for b in first)  # dt2 = 1 from earlier picks
        for c in state["cycles"]:
            assert len(c["control"]) == 2 and not set(c["control"]) & set(c["picks"])
            assert 0 <= c["mr_at_fppi1"] <= 1 and c["labeled"] == 3 * c["cycle"]
            assert (out / "seed0" / method / f"cycle{c['cycle']:02d}" / "eval.json").is_file()
        scored = method != "guided_random"
        assert (state["cycles"][0]["scored_frames"] == 40) is scored
        for c in state["cycles"]:
            assert c["instances_per_frame"] == pytest.approx(c["instances"] / 3)
            frames = out / "seed0" / method / f"cycle{c['cycle']:02d}" / "pool_frames.json"
            assert frames.is_file() is scored
            if scored:  # both rank checks, with their intervals, over the unlabeled pool
                kept = json.loads(frames.read_text())
                assert len(kept["positions"]) == 40 - 5 * (c["cycle"] - 1)
                assert len(kept["ground_truth"]) == len(kept["z"]) == len(kept["positions"])
                for key in ("spearman_z_errors", "spearman_z_error_rate"):
                    assert {key, f"{key}_low", f"{key}_high"} <= set(c)
    assert "## Rank checks" in text and "divergence minus each other method, LAMR" in text
    for name in ("fig5_mr_at_fppi1", "fig7_instances", "fig5_mr_fppi_divergence"):
        assert (out / "figures" / f"{name}.png").is_file()

    # A run killed after cycle 1: cycle 2 is made again, with the same picks.
    before = _state(out, "divergence")
    truncated = {**before, "cycles": before["cycles"][:1]}
    (out / "seed0" / "divergence" / "state.json").write_text(json.dumps(truncated))
    shutil.rmtree(out / "seed0" / "divergence" / "cycle02")
    run_experiment(config)
    after = _state(out, "divergence")
    assert after["cycles"][1]["picks"] == before["cycles"][1]["picks"]
    assert after["cycles"][1]["control"] == before["cycles"][1]["control"]

    # A finished run is not run again.
    stamp = (out / "seed0" / "guided_random" / "cycle02" / "last.pt").stat().st_mtime_ns
    run_experiment(config)
    assert (out / "seed0" / "guided_random" / "cycle02" / "last.pt").stat().st_mtime_ns == stamp

    # The same configuration elsewhere picks the same frames.
    again = replace(config, out=tmp_path / "b", methods=("divergence",), cycles=1)
    shutil.copytree(out / "data", again.out / "data")  # the synthetic sets, not regenerated
    run_experiment(again)
    assert _state(again.out, "divergence")["cycles"][0]["picks"] == before["cycles"][0]["picks"]

    # Another configuration in the same folder is refused.
    with pytest.raises(ConfigError, match="another configuration"):
        run_experiment(replace(config, budget=4))


@pytest.mark.slow
def test_human_labeling_round_pauses_and_resumes(tmp_path: Path) -> None:
    config = replace(
        load_experiment(TINY, out=tmp_path), methods=("random",), cycles=1, oracle="files"
    )
    with pytest.raises(LabelingPending):
        run_experiment(config)
    cycle_dir = tmp_path / "seed0" / "random" / "cycle01"
    request = json.loads((cycle_dir / "to_label.json").read_text())
    assert len(request) == 5  # b = 3 picks and 2 control frames
    assert not (tmp_path / "seed0" / "random" / "state.json").exists()
    # The labeler finds one person in each frame.
    labels = {
        "images": [{"id": r["image_id"]} for r in request],
        "annotations": [{"image_id": r["image_id"], "bbox": [4, 4, 10, 28]} for r in request],
    }
    (cycle_dir / "labels.json").write_text(json.dumps(labels))
    run_experiment(config)
    state = _state(tmp_path, "random")
    assert len(state["cycles"]) == 1 and state["cycles"][0]["labeled"] == 3
    selection = json.loads((cycle_dir / "selection.json").read_text())
    assert [r["image_id"] for r in request] == selection["picks"] + selection["control"]


@pytest.mark.slow
def test_fleet_labeling_round_pauses_and_resumes(tmp_path: Path) -> None:
    from alscout.trainer.fleet.pool import LabelPool
    from alscout.trainer.fleet.tasks import export_tasks, import_labels

    config = replace(
        load_experiment(TINY, out=tmp_path), methods=("random",), cycles=1, oracle="fleet"
    )
    with pytest.raises(LabelingPending, match="export-tasks"):
        run_experiment(config)
    cycle_dir = tmp_path / "seed0" / "random" / "cycle01"
    root = cycle_dir / "label_pool"
    exported = export_tasks(LabelPool(root), tmp_path / "tasks")
    assert exported.count == 5  # b = 3 picks and 2 control frames
    tasks = json.loads(exported.coco.read_text())
    # The labeler finds one person in each frame.
    labels = {
        **tasks,
        "annotations": [
            {"id": n, "image_id": image["id"], "category_id": 1, "bbox": [4, 4, 10, 28]}
            for n, image in enumerate(tasks["images"], 1)
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    assert import_labels(LabelPool(root), tmp_path / "labels.json").images == 5
    run_experiment(config)
    state = _state(tmp_path, "random")
    assert len(state["cycles"]) == 1 and state["cycles"][0]["labeled"] == 3
    selection = json.loads((cycle_dir / "selection.json").read_text())
    ids = [image["id"] for image in tasks["images"]]
    assert sorted(ids) == sorted(selection["picks"] + selection["control"])


@pytest.mark.slow
def test_a_given_checkpoint_is_w_l(tmp_path: Path) -> None:
    first = replace(load_experiment(TINY, out=tmp_path / "a"), methods=("random",), cycles=1)
    run_experiment(first)
    given = first.out / "seed0" / "w0" / "last.pt"
    second = replace(first, out=tmp_path / "b", initial_checkpoint=given)
    shutil.copytree(first.out / "data", second.out / "data")
    run_experiment(second)
    w0 = second.out / "seed0" / "w0"
    assert (w0 / "last.pt").read_bytes() == given.read_bytes()
    done = json.loads((w0 / "done.json").read_text())
    assert done["from"] == str(given)
    before = json.loads((given.parent / "done.json").read_text())
    assert done["mr_at_fppi1"] == before["mr_at_fppi1"]
    with pytest.raises(ConfigError, match="not found"):
        run_experiment(replace(second, out=tmp_path / "c", initial_checkpoint=tmp_path / "no.pt"))


@pytest.mark.slow
def test_a_killed_w_l_is_resumed_a_finished_one_kept_and_a_stale_one_trained_again(
    tmp_path: Path, caplog
) -> None:
    import torch

    from alscout.trainer.al.driver import Experiment
    from alscout.trainer.checkpoint import load_checkpoint
    from alscout.trainer.training import fit

    caplog.set_level(logging.INFO, logger="alscout")
    tiny = load_experiment(TINY, out=tmp_path / "a")
    first = replace(tiny, methods=("random",), cycles=1, train=replace(tiny.train, epochs=2))
    run_experiment(first)
    whole = load_checkpoint(first.out / "seed0" / "w0" / "last.pt")

    def killed_after_one_epoch(config, out: Path) -> None:  # w0/last.pt, no done.json
        shutil.copytree(first.out / "data", out / "data")
        exp = Experiment.load(config)
        train = config.train.with_overrides(seed=0)
        fit(
            exp.initial,
            config.detector,
            train,
            out_dir=out / "seed0" / "w0",
            stop_after=1,
            progress=False,
        )

    second = replace(first, out=tmp_path / "b")
    killed_after_one_epoch(second, second.out)
    run_experiment(second)
    assert "resumed" in caplog.text
    resumed = load_checkpoint(second.out / "seed0" / "w0" / "last.pt")
    assert resumed.epoch == 2
    assert all(torch.equal(resumed.model[k], v) for k, v in whole.model.items())

    caplog.clear()
    third = replace(first, out=tmp_path / "c")
    stale = replace(third, train=replace(third.train, lr=third.train.lr / 2))
    killed_after_one_epoch(stale, third.out)  # an earlier recipe left this checkpoint
    run_experiment(third)
    assert "from other settings: training w_l again" in caplog.text
    again = load_checkpoint(third.out / "seed0" / "w0" / "last.pt")
    assert again.train == whole.train
    assert all(torch.equal(again.model[k], v) for k, v in whole.model.items())

    caplog.clear()
    fourth = replace(first, out=tmp_path / "d")  # finished, killed before done.json
    shutil.copytree(first.out / "data", fourth.out / "data")
    (fourth.out / "seed0" / "w0").mkdir(parents=True)
    finished = first.out / "seed0" / "w0" / "last.pt"
    shutil.copyfile(finished, fourth.out / "seed0" / "w0" / "last.pt")
    run_experiment(fourth)
    assert "has all 2 epochs: not trained again" in caplog.text
    assert "from other settings" not in caplog.text
    kept = fourth.out / "seed0" / "w0" / "last.pt"
    assert kept.read_bytes() == finished.read_bytes()
