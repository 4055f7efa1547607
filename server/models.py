"""The model the server scores with, swapped in place by a hot reload.

:class:`ModelHolder` counts the batches that use each pipeline, so a replaced pipeline
is closed only when its last batch is done: a reload drops no frame. The vehicle loads
ONNX models and TensorRT engines only (SPEC §4): a PyTorch file or the ``torch`` backend
is refused before anything is imported, so ``alscout serve`` never loads torch.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alscout.errors import AlscoutError, ConfigError, InvalidInputError
from alscout.runtime.backends.registry import FORMATS, open_backend
from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline

__all__ = ["ModelHolder", "VEHICLE_FORMATS"]

log = logging.getLogger(__name__)

#: model formats the vehicle's server loads (file suffix -> format)
VEHICLE_FORMATS = {suffix: fmt for suffix, fmt in FORMATS.items() if fmt in ("onnx", "tensorrt")}
#: longest file name most file systems take, in bytes
_MAX_NAME_BYTES = 255


@dataclass
class _Loaded:
    pipeline: ScoringPipeline
    users: int = 0
    retired: bool = False


class ModelHolder:
    """The current scoring pipeline; swapped by :meth:`reload` without stopping calls.

    A replaced pipeline is closed once the last batch scored with it is done, so a
    reload drops no frame: batches formed before it finish on the old model, later
    ones run on the new, and every result names the model that scored it.
    """

    def __init__(self, model_path: Path, backend: str, threads: int, config: PipelineConfig):
        self.model_path = model_path
        self.backend_name = backend
        self.threads = threads
        self.config = config
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._current = _Loaded(self._open(model_path))

    def _open(self, path: Path) -> ScoringPipeline:
        if path.suffix.lower() not in VEHICLE_FORMATS:
            raise ConfigError(
                f"{path}: the server loads ONNX models and TensorRT engines only "
                f"({', '.join(VEHICLE_FORMATS)}), never PyTorch files; export the model "
                "with `alscout export onnx`"
            )
        if self.backend_name == "torch":
            raise ConfigError(
                "backend torch is not available in the server (the vehicle runs without "
                "PyTorch); use auto, an onnxruntime backend or tensorrt"
            )
        backend = open_backend(path, self.backend_name, threads=self.threads)
        return ScoringPipeline(backend, self.config)

    @property
    def pipeline(self) -> ScoringPipeline:
        """The pipeline new frames are scored with."""
        return self._current.pipeline

    @contextmanager
    def use(self) -> Iterator[ScoringPipeline]:
        """The current pipeline, kept open while the block runs."""
        with self._lock:
            loaded = self._current
            loaded.users += 1
        try:
            yield loaded.pipeline
        finally:
            with self._lock:
                loaded.users -= 1
                close = loaded.retired and loaded.users == 0
            if close:
                loaded.pipeline.close()

    def reload(self, model_file: str) -> tuple[ScoringPipeline, ScoringPipeline]:
        """Load ``model_file`` (a name in the model's folder; "" = the start-up file).

        Returns (previous, current) pipelines. On any error the current one stays. Errors
        name files relative to the model's folder (the message goes to a client): a bad
        name is :class:`InvalidInputError`, a bad file the error of its loading.
        """
        if model_file:
            _check_name(model_file)
        path = self.model_path.parent / model_file if model_file else self.model_path
        try:
            found = path.is_file()
        except (OSError, ValueError) as error:  # a name the file system refuses
            raise InvalidInputError(
                f"model_file {model_file!r}: {error.__class__.__name__}"
            ) from None
        if not found:
            raise InvalidInputError(f"model_file {model_file!r}: no such file next to the model")
        try:
            return self.reload_path(path)
        except AlscoutError as error:
            log.warning("model reload refused path=%s error=%s", path, error)
            message = _relative(str(error), self.model_path.parent)
            raise type(error)(message) from None

    def reload_path(self, path: Path) -> tuple[ScoringPipeline, ScoringPipeline]:
        """Load the model at ``path`` (any path: the registry's) and swap it in.

        Blocking (call it in a worker thread). Returns (previous, current); on any
        error the current pipeline stays.
        """
        with self._reload_lock:
            fresh = _Loaded(self._open(Path(path)))
            with self._lock:
                old, self._current = self._current, fresh
                old.retired = True
                close = old.users == 0
        if close:
            old.pipeline.close()
        log.info(
            "model reloaded path=%s version=%s hash=%s previous=%s",
            path,
            fresh.pipeline.model_info.version,
            fresh.pipeline.model_info.sha256[:12],
            old.pipeline.model_info.version,
        )
        return old.pipeline, fresh.pipeline

    def close(self) -> None:
        """Close the current pipeline (at shutdown, after calls have drained)."""
        with self._lock:
            self._current.retired = True
            close = self._current.users == 0
        if close:
            self._current.pipeline.close()


def _check_name(model_file: str) -> None:
    """Raise :class:`InvalidInputError` unless ``model_file`` is a plain file name of a
    model format the server loads."""
    if Path(model_file).name != model_file or model_file in (".", ".."):
        raise InvalidInputError(
            f"model_file {model_file!r} must be a file name in the model's folder, "
            "without path separators"
        )
    size = len(model_file.encode("utf-8", "surrogatepass"))
    if size > _MAX_NAME_BYTES or "\x00" in model_file:
        raise InvalidInputError(
            f"model_file must be a file name of at most {_MAX_NAME_BYTES} bytes without NUL, "
            f"got {size} bytes"
        )
    if Path(model_file).suffix.lower() not in VEHICLE_FORMATS:
        raise InvalidInputError(
            f"model_file {model_file!r}: the server loads ONNX models and TensorRT engines "
            f"only ({', '.join(VEHICLE_FORMATS)})"
        )


def _relative(message: str, folder: Path) -> str:
    """``message`` with the model folder's path taken out of file paths it holds."""
    for prefix in sorted({str(folder), str(folder.resolve())}, key=len, reverse=True):
        message = message.replace(prefix + os.sep, "").replace(prefix, "<model folder>")
    return message
