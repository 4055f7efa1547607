"""A model registry directory: numbered ONNX model versions, each with a manifest.

Layout under ``root``::

    versions/v000001/model.onnx
    versions/v000001/manifest.json   {"version", "file", "sha256", "created", "metrics", "notes"}
    versions/v000002/...

:meth:`ModelRegistry.publish` stages a version in a hidden folder (model copied and
fsynced, manifest written and fsynced) and then renames the folder into
``versions/``: a rename is atomic, so a reader sees a version completely or not at
all, and two publishers never share a number (the loser of a rename race takes the
next one). The newest version is the one with the highest number. Nothing here needs
PyTorch: the vehicle's server reads the registry to hot-reload models.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alscout.errors import ConfigError, DataError, InvalidInputError, ModelError
from alscout.runtime.model_info import file_sha256

__all__ = ["ModelVersion", "ModelRegistry", "MANIFEST_NAME", "MODEL_NAME"]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.onnx"
_VERSION = re.compile(r"v(\d{6,})")


@dataclass(frozen=True)
class ModelVersion:
    """One published model: ``path`` is its ONNX file, ``created`` an ISO 8601 UTC time."""

    version: str
    path: Path
    sha256: str
    created: str
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def number(self) -> int:
        """The version's sequence number (``v000012`` -> 12)."""
        return _number(self.version)

    def verify(self) -> None:
        """Raise :class:`ModelError` unless the file's SHA-256 is the manifest's."""
        try:
            actual = file_sha256(self.path)
        except OSError as error:
            raise ModelError(
                f"{self.path}: cannot read model version {self.version}: {error}"
            ) from None
        if actual != self.sha256:
            raise ModelError(
                f"{self.path}: SHA-256 {actual[:12]}... differs from the manifest's "
                f"{self.sha256[:12]}...; the file was changed after publishing"
            )


def _number(version: str) -> int:
    match = _VERSION.fullmatch(version)
    if match is None:
        raise InvalidInputError(f"version {version!r} is not of the form v000001")
    return int(match.group(1))


def _check_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """A JSON round trip of ``metrics``; non-finite numbers and non-JSON values raise."""
    if not isinstance(metrics, dict):
        raise InvalidInputError(f"metrics must be a dict, got {type(metrics).__name__}")
    try:
        text = json.dumps(metrics, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"metrics must be JSON with finite numbers: {error}") from None
    return json.loads(text)


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ModelRegistry:
    """Publishes and lists model versions under ``root`` (created when missing)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"model registry {self.root} is a file, not a folder")
        self.versions_dir = self.root / "versions"

    def versions(self) -> list[ModelVersion]:
        """Every readable version, oldest first; broken ones are logged and skipped."""
        if not self.versions_dir.is_dir():
            return []
        found = []
        for entry in self.versions_dir.iterdir():
            if not entry.is_dir() or _VERSION.fullmatch(entry.name) is None:
                continue
            try:
                found.append(self.get(entry.name))
            except DataError as error:
                log.warning("skipping model version error=%s", error)
        return sorted(found, key=lambda v: v.number)

    def latest(self) -> ModelVersion | None:
        """The highest-numbered readable version, or None when there is none."""
        versions = self.versions()
        return versions[-1] if versions else None

    def get(self, version: str) -> ModelVersion:
        """One version by name; :class:`DataError` naming the manifest when it is bad."""
        _number(version)
        folder = self.versions_dir / version
        manifest = folder / MANIFEST_NAME
        try:
            record = json.loads(manifest.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{manifest}: manifest of model version {version} is missing") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"{manifest}: unreadable manifest: {error}") from None
        try:
            if record["version"] != version:
                raise DataError(f"{manifest}: says version {record['version']!r}, folder {version}")
            model = folder / str(record["file"])
            if model.parent != folder:
                raise DataError(f"{manifest}: file {record['file']!r} leaves its folder")
            if not model.is_file():
                raise DataError(f"{manifest}: model file {model.name} is missing")
            return ModelVersion(
                version=version,
                path=model,
                sha256=str(record["sha256"]),
                created=str(record["created"]),
                metrics=dict(record.get("metrics", {})),
                notes=str(record.get("notes", "")),
            )
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, DataError):
                raise
            raise DataError(f"{manifest}: malformed manifest ({error!r})") from None

    def next_version(self) -> str:
        """The name the next :meth:`publish` will most likely take (``v000001`` first)."""
        numbers = [0]
        if self.versions_dir.is_dir():
            for entry in self.versions_dir.iterdir():
                match = _VERSION.fullmatch(entry.name)
                if match is not None:
                    numbers.append(int(match.group(1)))
        return f"v{max(numbers) + 1:06d}"

    def publish(
        self,
        model_file: str | Path,
        *,
        metrics: dict[str, Any],
        notes: str = "",
        version: str | None = None,
    ) -> ModelVersion:
        """Copy ``model_file`` in as a new version, atomically, and return it.

        ``metrics``: JSON-ready figures of the model (e.g. ``{"mr_fppi1": 0.31}``).
        ``version``: take exactly this name (:class:`ConfigError` when it exists);
        default: the next number.
        """
        source = Path(model_file)
        if not source.is_file():
            raise InvalidInputError(f"{source}: model file to publish not found")
        if source.stat().st_size == 0:
            raise ModelError(f"{source}: model file is empty")
        metrics = _check_metrics(metrics)
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            model = staging / MODEL_NAME
            with open(source, "rb") as src, open(model, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            record = {
                "file": MODEL_NAME,
                "sha256": file_sha256(model),
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "metrics": metrics,
                "notes": notes,
                "source": source.name,
            }
            name = self._commit(staging, record, version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        published = self.get(name)
        log.info(
            "model published registry=%s version=%s sha256=%s source=%s",
            self.root,
            name,
            published.sha256[:12],
            source,
        )
        return published

    def _commit(self, staging: Path, record: dict[str, Any], version: str | None) -> str:
        """Write the manifest into ``staging`` and rename it to a free version folder."""
        for attempt in range(1000):
            name = version or self.next_version()
            _number(name)
            manifest = json.dumps({**record, "version": name}, indent=1, sort_keys=True)
            _fsync_write(staging / MANIFEST_NAME, manifest.encode("utf-8"))
            _fsync_dir(staging)
            target = self.versions_dir / name
            try:
                os.rename(staging, target)  # fails when the target folder exists (not empty)
            except OSError as error:
                if not target.exists():
                    raise
                if version is not None:
                    raise ConfigError(f"model version {name} exists in {self.root}") from error
                log.debug("version taken by another publisher name=%s attempt=%d", name, attempt)
                continue
            _fsync_dir(self.versions_dir)
            return name
        raise ModelError(f"{self.root}: could not take a free version number")
