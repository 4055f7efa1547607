"""bench/scale_recipe.py: every arm trains, is evaluated per zoom and lands in one table."""

from __future__ import annotations

import argparse
import json

import pytest

from alscout.apps.cli import main as alscout


@pytest.fixture(scope="module")
def recipe(bench_script):
    return bench_script("scale_recipe")


def test_arms_are_the_recipe_per_seed_mirroring_only_per_baseline_seed_and_each_variant(recipe):
    variant = recipe.parse_variant("zp08=--zoom-prob 0.8")
    assert variant == ("zp08", ("--zoom-prob", "0.8"))
    arms = recipe.arms_of([0, 1], [0], [variant])
    assert [a.name for a in arms] == ["zoom s0", "zoom s1", "no zoom s0", "zp08 s0", "zp08 s1"]
    assert arms[2].flags == ("--no-scale-aug",) and arms[4].seed == 1
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=FLAGS"):
        recipe.parse_variant("--zoom-prob 0.8")


@pytest.mark.slow
def test_a_tiny_run_reports_every_arm_at_every_zoom(recipe, tmp_path, capsys):
    assert alscout(["data", "synth", "--out", str(tmp_path / "s"), "--count", "6"]) == 0
    capsys.readouterr()
    common = ["--data", str(tmp_path / "s" / "annotations.json"), "--images", str(tmp_path / "s")]
    common += ["--train-frames", "1-4", "--test-frames", "5-6", "--width", "4"]
    common += ["--size", "160x120", "--epochs", "2", "--batch-size", "2", "--device", "cpu"]
    common += ["--zooms", "0.5", "1", "2"]
    assert recipe.main([*common, "--out", str(tmp_path / "r")]) == 0
    table = capsys.readouterr().out
    assert "| zoom s0 |" in table and "| no zoom s0 |" in table
    assert "ratio 0.5" in table and "ratio 2" in table and "ratio 1 " not in table
    rows = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [r["arm"] for r in rows] == ["zoom s0", "no zoom s0"]
    for row in rows:
        assert not row["error"] and row["epochs"] == 2 and len(row["fewest_head_boxes"]) == 5
        assert sorted(s["zoom"] for s in row["scores"]) == [0.5, 1.0, 2.0]
        assert all(0 <= s["mr_at_fppi1"] <= 100 for s in row["scores"])
    assert (tmp_path / "r" / "report.md").read_text() == table
    # an arm the deadline stops is reported, not lost, and the run fails
    assert recipe.main([*common, "--out", str(tmp_path / "late"), "--deadline-s", "0"]) == 1
    late = json.loads((tmp_path / "late" / "results.json").read_text())
    assert all("deadline" in r["error"] for r in late)
    assert "not finished" in capsys.readouterr().out


def test_zoom_one_is_required(recipe, tmp_path):
    with pytest.raises(SystemExit):
        recipe.main(["--out", str(tmp_path), "--zooms", "0.5", "2"])
