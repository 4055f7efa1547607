from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from shared_inputs import write_tiny_detector

from alscout.apps.cli import main
from alscout.runtime.model_registry import ModelRegistry
from alscout.trainer.data.annotations import Box, Dataset, ImageRecord
from alscout.trainer.data.coco import write_coco
from alscout.trainer.fleet.pool import LabelPool


def upload(sink: Path, recording: str, frame: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (15, 15), 0)
    folder = sink / recording / "cam"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{frame:012d}.png"
    path.write_bytes(cv2.imencode(".png", image)[1].tobytes())
    side = path.with_name(path.name + ".json")
    side.write_text(
        json.dumps(
            {
                "recording_id": recording,
                "camera_id": "cam",
                "frame_index": frame,
                "image_format": "png",
            }
        )
    )
    return side


def test_ingest_export_oracle_import(tmp_path, capsys):
    sink = tmp_path / "car-1"
    upload(sink, "rec", 0, 0)
    upload(sink, "rec", 20, 1)
    bad = upload(sink, "rec", 40, 2)
    bad.write_text("{broken")
    pool_dir = tmp_path / "pool"
    assert main(["fleet", "ingest", "--pool", str(pool_dir), str(sink)]) == 1
    out, err = capsys.readouterr()
    assert "added=2" in out and "rejected=1" in out
    assert f"rejected: {bad}" in err

    assert (
        main(["fleet", "export-tasks", "--pool", str(pool_dir), "--out", str(tmp_path / "t")]) == 0
    )
    assert "images=2" in capsys.readouterr().out
    tasks = json.loads((tmp_path / "t" / "tasks_label_studio.json").read_text())
    assert len(tasks) == 2

    truth = Dataset(
        [
            ImageRecord(i, tmp_path / "v.avi", 64, 48, (Box(2.0, 3.0, 10.0, 25.0),), i)
            for i in range(30)
        ]
    )
    gt_file = write_coco(truth, tmp_path / "gt" / "annotations.json")
    (tmp_path / "v.avi").write_bytes(b"")  # read_coco checks that the video exists
    labels = tmp_path / "labels.json"
    args = ["fleet", "oracle", "--pool", str(pool_dir), "--ground-truth", f"rec={gt_file}"]
    assert main([*args, "--out", str(labels)]) == 0
    assert main(["fleet", "import-labels", "--pool", str(pool_dir), str(labels)]) == 0
    assert "images=2 boxes=2" in capsys.readouterr().out
    assert len(LabelPool(pool_dir).labeled()) == 2

    # a malformed label file: named, exit 2, pool unchanged
    broken = tmp_path / "broken_labels.json"
    broken.write_text('{"images": [{"id": 1}]}')
    before = (pool_dir / "manifest.json").read_bytes()
    assert main(["fleet", "import-labels", "--pool", str(pool_dir), str(broken)]) == 2
    assert str(broken) in capsys.readouterr().err
    assert (pool_dir / "manifest.json").read_bytes() == before


def test_publish(tmp_path, capsys):
    model = write_tiny_detector(tmp_path / "tiny.onnx")
    registry = tmp_path / "registry"
    args = ["fleet", "publish", "--registry", str(registry), "--model", str(model)]
    assert main([*args, "--metrics", '{"mr_fppi1": 0.5}', "--notes", "by hand"]) == 0
    assert "version=v000001" in capsys.readouterr().out
    latest = ModelRegistry(registry).latest()
    assert latest.metrics == {"mr_fppi1": 0.5} and latest.notes == "by hand"
    assert main([*args, "--metrics", "[1]"]) == 2
    assert "JSON object" in capsys.readouterr().err
    not_onnx = tmp_path / "junk.onnx"
    not_onnx.write_bytes(b"junk")
    assert main(["fleet", "publish", "--registry", str(registry), "--model", str(not_onnx)]) == 2
    assert str(not_onnx) in capsys.readouterr().err
    assert ModelRegistry(registry).latest().version == "v000001"


def test_oracle_argument_form():
    with pytest.raises(SystemExit):
        main(["fleet", "oracle", "--pool", "p", "--ground-truth", "no-equals", "--out", "x"])
