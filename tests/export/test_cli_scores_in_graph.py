"""``alscout export onnx --scores-in-graph``: a checkpoint to a verified in-graph model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from alscout.apps.cli import main
from alscout.export.verify_scores import reference_scores
from alscout.runtime.backends import open_backend
from alscout.runtime.model_info import GraphScoring

torch = pytest.importorskip("torch", reason="export needs torch (the train extra)")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from alscout.trainer.checkpoint import Checkpoint, save_checkpoint
    from alscout.trainer.model import Detector, DetectorConfig

    torch.manual_seed(4)
    config = DetectorConfig(width=4, fires_per_level=0, name="ig-det", version="2")
    detector = Detector(config)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    return save_checkpoint(
        path, Checkpoint(model=detector.state_dict(), detector=config, data_digest="digest-2")
    )


def export(checkpoint: Path, out: Path, *flags: str) -> int:
    args = ["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(out)]
    return main([*args, "--input-size", "128x96", *flags])


def props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_the_flag_writes_a_verified_model_with_z_and_heatmap(
    checkpoint, tmp_path, pets_video, capsys
):
    out = tmp_path / "models" / "scored.onnx"
    code = export(checkpoint, out, "--scores-in-graph", "--verify-frames", str(pets_video),
                  "--verify-limit", "6")  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed
    assert "onnxruntime-cpu vs torch:" in printed  # the plain export, verified first
    assert "(scores in the graph) vs onnxruntime-cpu + Numba scoring:" in printed
    assert printed.count(": ok z max rel") == 2 and "FAILED" not in printed
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["z", "heatmap"]
    meta = props(out)
    assert meta["alscout.model_name"] == "ig-det"
    assert meta["alscout.scores.radius"] == "9" and meta["alscout.scores.region"] == "30"
    assert meta["alscout.scores.method"] == "divergence"
    assert meta["alscout.scores.double_evaluation"] == "true"
    assert sorted(p.name for p in out.parent.iterdir()) == ["scored.onnx"]


def test_the_settings_flags_reach_the_graph_and_its_metadata(checkpoint, tmp_path, capsys):
    out = tmp_path / "entropy.onnx"
    flags = ["--method", "entropy", "--no-double-eval", "--radius", "4", "--region", "12"]
    code = export(checkpoint, out, "--scores-in-graph", *flags, "--keep-probs")
    assert code == 0, capsys.readouterr().err
    meta = props(out)
    assert meta["alscout.scores.method"] == "entropy"
    assert meta["alscout.scores.double_evaluation"] == "false"
    assert (meta["alscout.scores.radius"], meta["alscout.scores.region"]) == ("4", "12")
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["z", "heatmap", "probs"]
    plain = tmp_path / "plain.onnx"
    assert export(checkpoint, plain) == 0
    assert not any(key.startswith("alscout.scores.") for key in props(plain))
    images = np.random.default_rng(0).standard_normal((2, 3, 96, 128), np.float32)
    scoring = GraphScoring(radius=4, region=12, method="entropy", double_evaluation=False)
    with open_backend(plain, "onnxruntime-cpu") as p, open_backend(out, "onnxruntime-cpu") as g:
        ref = reference_scores(p, images, scoring)
        got = g.infer_scores(images)
    np.testing.assert_allclose(got.z, ref.z, rtol=1e-4)
    np.testing.assert_allclose(got.probs, ref.probs, atol=1e-6)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--radius", "5"], "--radius only apply with --scores-in-graph"),
        (["--keep-probs", "--no-double-eval"], "--no-double-eval, --keep-probs only apply"),
        (["--scores-in-graph", "--region", "0"], "--region must be an integer >= 1"),
        (["--scores-in-graph", "--heatmap-stride", "0"], "--heatmap-stride must be"),
    ],
)
def test_bad_flag_combinations_say_what_to_do(checkpoint, tmp_path, capsys, flags, message):
    out = tmp_path / "m.onnx"
    assert export(checkpoint, out, *flags) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_trt_engines_are_built_from_plain_models_only(checkpoint, tmp_path, capsys):
    scored = tmp_path / "scored.onnx"
    assert export(checkpoint, scored, "--scores-in-graph") == 0
    code = main(["export", "trt", "--onnx", str(scored), "--out", str(tmp_path / "m.engine")])
    assert code == 2
    assert "has the scores inside its graph" in capsys.readouterr().err
