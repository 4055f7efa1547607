from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from alscout.errors import ConfigError, DataError, InvalidInputError, ModelError
from alscout.runtime.model_registry import MANIFEST_NAME, ModelRegistry


def model_file(tmp_path: Path, content: bytes = b"onnx bytes", name: str = "m.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_empty_registry_has_no_latest(tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    assert registry.latest() is None
    assert registry.versions() == []
    assert registry.next_version() == "v000001"


def test_publish_copies_and_writes_manifest(tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    source = model_file(tmp_path, b"first model")
    published = registry.publish(source, metrics={"mr_fppi1": 0.25}, notes="cycle 1")
    assert published.version == "v000001"
    assert published.path.read_bytes() == b"first model"
    assert published.path != source
    assert published.sha256 == hashlib.sha256(b"first model").hexdigest()
    assert published.metrics == {"mr_fppi1": 0.25}
    assert published.notes == "cycle 1"
    manifest = json.loads((published.path.parent / MANIFEST_NAME).read_text())
    assert manifest["version"] == "v000001"
    assert manifest["sha256"] == published.sha256
    assert registry.latest() == published
    published.verify()


def test_versions_increase_and_latest_is_newest(tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    for i in range(3):
        registry.publish(model_file(tmp_path, f"model {i}".encode()), metrics={"i": i})
    versions = registry.versions()
    assert [v.version for v in versions] == ["v000001", "v000002", "v000003"]
    assert registry.latest().metrics == {"i": 2}
    assert registry.latest().path.read_bytes() == b"model 2"
    # a second registry object on the same folder sees the same thing
    assert ModelRegistry(tmp_path / "reg").latest() == registry.latest()


def test_explicit_version_and_collision(tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    assert registry.publish(model_file(tmp_path), metrics={}, version="v000007").number == 7
    assert registry.next_version() == "v000008"
    with pytest.raises(ConfigError, match="v000007 exists"):
        registry.publish(model_file(tmp_path), metrics={}, version="v000007")
    with pytest.raises(InvalidInputError, match="form v000001"):
        registry.publish(model_file(tmp_path), metrics={}, version="latest")
    # nothing half-published is left behind
    assert [p.name for p in (tmp_path / "reg").iterdir()] == ["versions"]


def test_bad_inputs_are_refused(tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    with pytest.raises(InvalidInputError, match="not found"):
        registry.publish(tmp_path / "missing.onnx", metrics={})
    with pytest.raises(ModelError, match="empty"):
        registry.publish(model_file(tmp_path, b""), metrics={})
    with pytest.raises(InvalidInputError, match="finite"):
        registry.publish(model_file(tmp_path), metrics={"x": float("nan")})
    with pytest.raises(InvalidInputError, match="JSON"):
        registry.publish(model_file(tmp_path), metrics={"x": object()})
    assert registry.latest() is None
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        ModelRegistry(tmp_path / "afile")


def test_broken_manifest_is_skipped_by_listing_and_named_by_get(tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    registry.publish(model_file(tmp_path, b"good"), metrics={})
    second = registry.publish(model_file(tmp_path, b"later"), metrics={})
    manifest = second.path.parent / MANIFEST_NAME
    manifest.write_text("{not json")
    assert registry.latest().version == "v000001"
    with pytest.raises(DataError, match=str(manifest)):
        registry.get("v000002")
    manifest.write_text(json.dumps({"version": "v000002"}))
    with pytest.raises(DataError, match="malformed"):
        registry.get("v000002")
    # a half-made folder from a crashed foreign writer is ignored too
    (registry.versions_dir / "v000003").mkdir()
    assert registry.latest().version == "v000001"


def test_verify_detects_a_changed_file(tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    version = registry.publish(model_file(tmp_path, b"original"), metrics={})
    version.path.write_bytes(b"tampered")
    with pytest.raises(ModelError, match="differs from the manifest"):
        version.verify()


def test_concurrent_publishers_never_share_a_version(tmp_path):
    registry = ModelRegistry(tmp_path / "reg")
    sources = [model_file(tmp_path, f"m{i}".encode(), f"m{i}.onnx") for i in range(6)]
    errors: list[BaseException] = []

    def publish(path: Path) -> None:
        try:
            ModelRegistry(tmp_path / "reg").publish(path, metrics={})
        except Exception as error:  # noqa: BLE001  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=publish, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    versions = registry.versions()
    assert [v.number for v in versions] == [1, 2, 3, 4, 5, 6]
    assert sorted(v.path.read_bytes() for v in versions) == sorted(s.read_bytes() for s in sources)
