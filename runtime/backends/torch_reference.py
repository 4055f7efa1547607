"""PyTorch reference backend: the ground truth the other backends are compared against.

The only place under runtime/ that imports torch, and only inside methods, so the
vehicle never needs it. It runs either an in-memory module (the trainer's detector,
for export verification and benchmarks) or a ``.pt2`` file written by
``torch.export.save`` with the model metadata in its extra files
(``alscout export pt2``); runtime/ never imports the trainer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from alscout.errors import BackendUnavailableError, InvalidInputError, ModelError
from alscout.runtime.backends.base import Backend, TensorMeta, check_io_contract
from alscout.runtime.model_info import (
    DIFFICULTY_NAME,
    HEATMAP_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    Z_NAME,
    ModelInfo,
    file_sha256,
)

__all__ = ["TorchBackend", "PT2_METADATA_FILE"]

log = logging.getLogger(__name__)

#: name of the extra file inside a ``.pt2`` archive that holds the metadata props
PT2_METADATA_FILE = "alscout_metadata.json"


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as error:
        raise BackendUnavailableError(
            "torch backend: PyTorch is not installed (pip install 'alscout[train]')"
        ) from error
    return torch


class TorchBackend(Backend):
    """Runs a PyTorch module in eval mode under ``torch.inference_mode``.

    ``threads`` > 0 sets torch's intra-op thread count while active (the benchmark
    compares backends at equal thread counts); 0 leaves torch's default. ``outputs``:
    the names of what the module returns, in order; default ``probs``, or ``z`` and
    ``heatmap`` for a module with the scores inside, or ``probs`` and ``difficulty``
    for one with the difficulty head (``model_info.difficulty``: the trainer's
    ``DetectorWithDifficulty``).
    """

    name = "torch"

    def __init__(
        self,
        module: Any,
        model_info: ModelInfo,
        *,
        source: str = "<module>",
        threads: int = 0,
        outputs: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        self._module = module
        self._threads = threads
        self._saved_threads = 0
        self._exported = _is_exported(module)
        self.source = source
        self.model_info = model_info
        if outputs is None:
            if model_info.scoring is not None:
                outputs = (Z_NAME, HEATMAP_NAME)
            elif model_info.difficulty:
                outputs = (OUTPUT_NAME, DIFFICULTY_NAME)
            else:
                outputs = (OUTPUT_NAME,)
        self.output_names = outputs
        shapes: dict[str, tuple[int | None, ...]] = {
            OUTPUT_NAME: (None, model_info.num_heads, None, None),
            DIFFICULTY_NAME: (None, 1, None, None),
            Z_NAME: (None,),
            HEATMAP_NAME: (None, None, None),
        }
        dims: tuple[int | None, ...] = (None, 3, None, None)
        self.input_meta, self.output_meta = check_io_contract(
            source,
            model_info,
            [TensorMeta(INPUT_NAME, "float32", dims)],
            [TensorMeta(name, "float32", shapes.get(name, ())) for name in outputs],
        )

    @classmethod
    def from_file(cls, model_path: str | Path, *, threads: int = 0) -> TorchBackend:
        """Load a ``.pt2`` program; its metadata must follow the model contract."""
        torch = _import_torch()
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        extra = {PT2_METADATA_FILE: ""}
        try:
            program = torch.export.load(str(path), extra_files=extra)
        except Exception as error:  # torch raises many unrelated types for a bad archive
            raise ModelError(f"{path}: not a torch.export program: {error}") from error
        if not extra[PT2_METADATA_FILE]:
            raise ModelError(f"{path}: the program has no {PT2_METADATA_FILE} metadata")
        try:
            metadata = json.loads(extra[PT2_METADATA_FILE])
        except json.JSONDecodeError as error:
            raise ModelError(f"{path}: {PT2_METADATA_FILE} is not JSON: {error}") from error
        sha256 = file_sha256(path)
        info = ModelInfo.from_metadata(metadata, source=path, sha256=sha256, file_format="pt2")
        return cls(program.module(), info, source=str(path), threads=threads)

    def probe_shape(self) -> tuple[int, int, int, int]:
        # An exported program supports the shapes torch.export derived from its example
        # (two frames at the input size); 64x64 may lie below its smallest.
        if self._exported:
            return (2, 3, *self.model_info.input_size)
        return super().probe_shape()

    def activate_impl(self) -> None:
        torch = _import_torch()
        if hasattr(self._module, "eval") and not self._exported:
            self._module.eval()
        if self._threads > 0:
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(self._threads)

    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        torch = _import_torch()
        try:
            with torch.inference_mode():
                probs = self._module(torch.from_numpy(images))
        except (RuntimeError, AssertionError) as error:
            if not self._exported:
                raise
            # An exported program checks its shape guards on every call.
            raise InvalidInputError(
                f"{self.source}: the exported program cannot run {images.shape}: {error}"
            ) from error
        if isinstance(probs, tuple | list):
            probs = probs[0]
        return probs.detach().cpu().numpy().astype(np.float32, copy=False)

    def infer_outputs_impl(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """A module with the scores inside (``export.scores_graph.ScoredDetector``) or
        the difficulty head: its outputs, in :attr:`output_names` order."""
        torch = _import_torch()
        with torch.inference_mode():
            values = self._module(torch.from_numpy(images))
        if not isinstance(values, tuple | list):
            values = (values,)
        if len(values) != len(self.output_names):
            raise ModelError(
                f"{self.source}: the module returned {len(values)} outputs, expected "
                f"{list(self.output_names)}"
            )
        return {
            name: value.detach().cpu().numpy().astype(np.float32, copy=False)
            for name, value in zip(self.output_names, values, strict=True)
        }

    def deactivate_impl(self) -> None:
        if self._saved_threads:
            _import_torch().set_num_threads(self._saved_threads)
            self._saved_threads = 0


def _is_exported(module: Any) -> bool:
    # Modules from ``ExportedProgram.module()`` refuse ``.eval()``; they are already
    # frozen in the mode they were exported in.
    return type(module).__name__ in ("GraphModule", "_UnliftedGraphModule") or hasattr(
        module, "graph_signature"
    )
