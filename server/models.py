"""The model the server scores with, swapped in place by a hot reload.

:class:`ModelHolder` counts the batches that use each pipeline, so a replaced pipeline
is closed only when its last batch is done: a reload drops no frame.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alscout.errors import InvalidInputError
from alscout.runtime.backends.registry import open_backend
from alscout.runtime.pipeline import PipelineConfig, ScoringPipeline

__all__ = ["ModelHolder"]

log = logging.getLogger(__name__)


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

        Returns (previous, current) pipelines. On any error the current one stays.
        """
        if model_file and (Path(model_file).name != model_file or model_file in (".", "..")):
            raise InvalidInputError(
                f"model_file {model_file!r} must be a file name in the model's folder, "
                "without path separators"
            )
        path = self.model_path.parent / model_file if model_file else self.model_path
        if not path.is_file():
            raise InvalidInputError(f"model_file {model_file!r}: no such file next to the model")
        return self.reload_path(path)

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
