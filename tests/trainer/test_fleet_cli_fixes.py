"""What a new user walking docs/fleet.md missed: versions, help, errors, generations."""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np

from alscout.apps.cli import build_parser, main
from alscout.runtime.backends.registry import open_backend
from alscout.runtime.model_info import file_sha256
from alscout.runtime.model_registry import ModelRegistry
from alscout.trainer.fleet.ingest import ingest
from alscout.trainer.fleet.pool import LabelPool


def test_publish_gives_the_model_the_registry_s_version(tiny_model, tmp_path, capsys):
    registry = tmp_path / "models"
    ModelRegistry(registry).publish(tiny_model, metrics={})  # v000001 taken already
    args = ["--registry", str(registry), "--model", str(tiny_model)]
    assert main(["fleet", "publish", *args, "--metrics", '{"mr": 0.3}']) == 0
    assert capsys.readouterr().out.startswith("published version=v000002 ")
    version = ModelRegistry(registry).get("v000002")
    version.verify()  # the manifest's hash is the stamped file's
    backend = open_backend(version.path, "onnxruntime-cpu", threads=1)
    assert backend.model_info.version == "v000002"  # what GetModelInfo reports
    assert version.sha256 == file_sha256(version.path) != file_sha256(tiny_model)


def test_finetune_help_says_what_base_data_is():
    parser = build_parser("fleet")
    fleet = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    fleet_parser = fleet.choices["fleet"]
    actions = next(a for a in fleet_parser._actions if isinstance(a, argparse._SubParsersAction))
    finetune = actions.choices["finetune"]
    helps = {a.dest: a.help for a in finetune._actions}
    assert "validation" not in helps["base_data"] and "w_l was trained on" in helps["base_data"]
    assert helps["val_data"].startswith("validation annotations")


def test_errors_name_the_fleet_action(tmp_path, capsys):
    labels = tmp_path / "labels.json"
    labels.write_text('{"not": "labels"}')
    assert main(["fleet", "import-labels", "--pool", str(tmp_path / "pool"), str(labels)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"alscout fleet import-labels: {labels}: not a COCO file")
    args = ["--registry", str(tmp_path / "models"), "--model", str(tmp_path / "none.onnx")]
    assert main(["fleet", "publish", *args]) == 2
    assert capsys.readouterr().err.startswith("alscout fleet publish: ")


def test_an_ingest_that_adds_nothing_leaves_the_manifest_alone(tmp_path):
    sink = tmp_path / "car-1"
    folder = sink / "rec-1" / "cam0"
    folder.mkdir(parents=True)
    image = cv2.resize(np.random.default_rng(0).integers(0, 256, (6, 8, 3), np.uint8), (64, 48))
    (folder / "000000000004.png").write_bytes(cv2.imencode(".png", image)[1].tobytes())
    record = {"recording_id": "rec-1", "camera_id": "cam0", "frame_index": 4,
              "image_format": "png", "z": 1.0, "smoothed": 1.0}  # fmt: skip
    (folder / "000000000004.png.json").write_text(json.dumps(record))
    pool = LabelPool(tmp_path / "pool")
    assert len(ingest(pool, [sink]).added) == 1
    assert pool.generation == 1
    manifest = pool.manifest_path.read_bytes()
    stamp = pool.manifest_path.stat().st_mtime_ns
    again = ingest(pool, [sink])
    assert again.added == [] and again.already == 1
    assert LabelPool(pool.root).generation == 1 and pool.generation == 1
    assert pool.manifest_path.read_bytes() == manifest
    assert pool.manifest_path.stat().st_mtime_ns == stamp
