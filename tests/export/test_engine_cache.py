from __future__ import annotations

import dataclasses
import json

import pytest

from alscout.errors import ConfigError
from alscout.export.cache import EngineCache, EngineKey, GpuIdentity, copy_engine, default_cache_dir
from alscout.runtime.backends.profiles import ShapeProfile
from alscout.runtime.backends.tensorrt import sidecar_path

H200 = GpuIdentity(name="NVIDIA H200", compute_capability="9.0")
PROFILE = ShapeProfile(min=(1, 64, 64), opt=(16, 480, 640), max=(16, 960, 1280))


def key(**changes) -> EngineKey:
    values = dict(
        onnx_sha256="a" * 64,
        tensorrt_version="10.9.0",
        gpu=H200,
        precision="fp16",
        profiles=(PROFILE,),
    )
    values.update(changes)
    return EngineKey(**values)


def test_digest_is_stable_and_changes_with_every_field():
    base = key()
    assert base.digest() == key().digest()
    variants = [
        key(onnx_sha256="b" * 64),
        key(tensorrt_version="10.10.0"),
        key(gpu=GpuIdentity("NVIDIA A100", "8.0")),
        key(gpu=dataclasses.replace(H200, compute_capability="9.1")),
        key(precision="fp32"),
        key(profiles=(PROFILE, PROFILE)),
        key(profiles=(dataclasses.replace(PROFILE, opt=(8, 480, 640)),)),
        key(precision="int8", calibration_digest="c1"),
    ]
    digests = {v.digest() for v in variants}
    assert base.digest() not in digests and len(digests) == len(variants)


def test_key_is_validated():
    with pytest.raises(ConfigError, match="precision"):
        key(precision="bf8")
    with pytest.raises(ConfigError, match="at least one"):
        key(profiles=())
    with pytest.raises(ConfigError, match="calibration"):
        key(precision="int8")


def test_get_or_build_builds_once_per_key(tmp_path):
    cache = EngineCache(tmp_path)
    built = []

    def build() -> bytes:
        built.append(1)
        return b"engine-bytes-%d" % len(built)

    sidecar = {"metadata": {"alscout.model_name": "m"}}
    path, hit = cache.get_or_build(key(), build, sidecar)
    assert not hit and built == [1] and path.read_bytes() == b"engine-bytes-1"
    stored = json.loads(sidecar_path(path).read_text())
    assert stored["cache_key"] == key().to_json() and stored["metadata"] == sidecar["metadata"]
    again, hit = cache.get_or_build(key(), build, sidecar)
    assert hit and again == path and built == [1]
    other, hit = cache.get_or_build(key(precision="fp32"), build, sidecar)
    assert not hit and other != path and built == [1, 1]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".partial"))]


def test_lookup_refuses_entries_whose_sidecar_disagrees(tmp_path):
    cache = EngineCache(tmp_path)
    path = cache.store(key(), b"x", {"metadata": {}})
    assert cache.lookup(key()) == path
    side = sidecar_path(path)
    data = json.loads(side.read_text())
    data["cache_key"]["tensorrt_version"] = "9.0"
    side.write_text(json.dumps(data))
    assert cache.lookup(key()) is None
    side.write_text("{broken")
    assert cache.lookup(key()) is None
    side.unlink()
    assert cache.lookup(key()) is None


def test_copy_engine_brings_the_sidecar(tmp_path):
    source = EngineCache(tmp_path / "cache").store(key(), b"abc", {"metadata": {}})
    target = copy_engine(source, tmp_path / "out" / "model.engine")
    assert target.read_bytes() == b"abc"
    assert sidecar_path(target).read_text() == sidecar_path(source).read_text()


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ALSCOUT_ENGINE_CACHE", str(tmp_path / "engines"))
    assert default_cache_dir() == tmp_path / "engines"
    monkeypatch.delenv("ALSCOUT_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "alscout" / "engines"
    assert EngineCache().root == tmp_path / "alscout" / "engines"


def test_discard_removes_the_entry_a_copy_came_from(tmp_path):
    cache = EngineCache(tmp_path / "cache")
    cached = cache.store(key(), b"abc", {"metadata": {}})
    copy = copy_engine(cached, tmp_path / "out" / "model.engine")
    assert cache.discard(copy)
    assert not cached.exists() and not sidecar_path(cached).exists()
    assert cache.lookup(key()) is None
    assert not cache.discard(copy)  # already gone
    assert not cache.discard(tmp_path / "no-such.engine")
