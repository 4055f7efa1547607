"""A cache of built TensorRT engines, keyed by what makes an engine valid.

An engine runs only on the GPU model and TensorRT version it was built with, and it
is only the right engine for one ONNX file, precision, set of profiles and INT8
calibration set. :class:`EngineKey` holds all of these; its digest names the cached
file, and the full key is kept in the engine's sidecar so a lookup can confirm it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alscout.errors import ConfigError
from alscout.files import write_atomic
from alscout.runtime.backends.profiles import ShapeProfile
from alscout.runtime.backends.tensorrt import cuda_call, import_cudart, sidecar_path

__all__ = [
    "PRECISIONS",
    "GpuIdentity",
    "EngineKey",
    "EngineCache",
    "current_gpu",
    "default_cache_dir",
    "write_engine",
    "copy_engine",
]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class GpuIdentity:
    """The GPU model an engine is built for: name and compute capability ("9.0")."""

    name: str
    compute_capability: str


def current_gpu(device_id: int = 0) -> GpuIdentity:
    """Identity of CUDA device ``device_id`` (needs cuda-python and a GPU)."""
    cudart = import_cudart()
    props = cuda_call(cudart.cudaGetDeviceProperties(device_id))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else props.name
    return GpuIdentity(
        name=name.rstrip("\x00").strip(), compute_capability=f"{props.major}.{props.minor}"
    )


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. ``calibration_digest`` is "" unless INT8."""

    onnx_sha256: str
    tensorrt_version: str
    gpu: GpuIdentity
    precision: str
    profiles: tuple[ShapeProfile, ...]
    calibration_digest: str = ""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.profiles:
            raise ConfigError("an engine needs at least one optimization profile")
        if self.precision == "int8" and not self.calibration_digest:
            raise ConfigError("an INT8 engine key needs the calibration set's digest")

    def to_json(self) -> dict[str, Any]:
        return {
            "onnx_sha256": self.onnx_sha256,
            "tensorrt_version": self.tensorrt_version,
            "gpu": {"name": self.gpu.name, "compute_capability": self.gpu.compute_capability},
            "precision": self.precision,
            "profiles": [p.to_json() for p in self.profiles],
            "calibration_digest": self.calibration_digest,
        }

    def digest(self) -> str:
        """Hex SHA-256 of the canonical JSON of the key."""
        return _digest(self.to_json())


def _digest(key_json: dict[str, Any]) -> str:
    text = json.dumps(key_json, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$ALSCOUT_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/alscout/engines`` (~/.cache)."""
    if os.environ.get("ALSCOUT_ENGINE_CACHE"):
        return Path(os.environ["ALSCOUT_ENGINE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "alscout" / "engines"


def write_engine(path: str | Path, engine: bytes, sidecar: dict[str, Any]) -> Path:
    """Write an engine and its sidecar JSON, each atomically (sidecar last)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, engine)
    write_atomic(sidecar_path(path), json.dumps(sidecar, indent=2, sort_keys=True).encode())
    return path


class EngineCache:
    """Engines in one folder, ``<key digest>.engine`` with ``<...>.engine.json`` beside."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path_for(self, key: EngineKey) -> Path:
        return self.root / f"{key.digest()[:40]}.engine"

    def discard(self, engine_path: str | Path) -> bool:
        """Remove the cache entry a copied engine came from (e.g. it failed verification).

        Returns whether an entry was removed.
        """
        try:
            key_json = json.loads(sidecar_path(engine_path).read_text())["cache_key"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            return False
        cached = self.root / f"{_digest(key_json)[:40]}.engine"
        found = cached.is_file()
        cached.unlink(missing_ok=True)
        sidecar_path(cached).unlink(missing_ok=True)
        if found:
            log.warning("engine cache entry discarded path=%s", cached)
        return found

    def lookup(self, key: EngineKey) -> Path | None:
        """The cached engine for ``key``, or None (also when its sidecar disagrees)."""
        path = self.path_for(key)
        sidecar = sidecar_path(path)
        if not path.is_file() or not sidecar.is_file():
            return None
        try:
            stored = json.loads(sidecar.read_text()).get("cache_key")
        except (OSError, json.JSONDecodeError):
            log.warning("engine cache entry unreadable, rebuilding path=%s", sidecar)
            return None
        if stored != key.to_json():
            log.warning("engine cache entry has another key, rebuilding path=%s", path)
            return None
        return path

    def store(self, key: EngineKey, engine: bytes, sidecar: dict[str, Any]) -> Path:
        """Save an engine under ``key``; the key is added to its sidecar."""
        return write_engine(self.path_for(key), engine, {**sidecar, "cache_key": key.to_json()})

    def get_or_build(
        self, key: EngineKey, build: Callable[[], bytes], sidecar: dict[str, Any]
    ) -> tuple[Path, bool]:
        """(path of the engine for ``key``, whether it came from the cache)."""
        cached = self.lookup(key)
        if cached is not None:
            log.info("engine cache hit key=%s path=%s", key.digest()[:12], cached)
            return cached, True
        log.info("engine cache miss key=%s; building", key.digest()[:12])
        return self.store(key, build(), sidecar), False


def copy_engine(source: Path, target: str | Path) -> Path:
    """Copy an engine and its sidecar to ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    shutil.copyfile(sidecar_path(source), sidecar_path(target))
    return target
