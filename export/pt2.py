"""Export the detector as a ``torch.export`` program (``.pt2``) for the PyTorch reference backend.

The runtime never imports the trainer, so its PyTorch backend loads a self-contained
program instead of a checkpoint; the model metadata rides in the archive's extra
files. Batch, height and width are dynamic (``Dim.AUTO``): torch.export records the
ranges and guards the graph supports (for the detector, H and W above its total
stride of 64), the backend refuses other shapes with an InvalidInputError, and it
probes at the model's input size.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from alscout.export.loaders import Loader, resolve
from alscout.runtime.backends.torch_reference import PT2_METADATA_FILE
from alscout.runtime.model_info import ModelInfo

__all__ = ["ProgramFromTorch", "SaveProgram"]

log = logging.getLogger(__name__)


class ProgramFromTorch(Loader[Any]):
    """Trace a module to a ``torch.export.ExportedProgram`` with dynamic N, H, W."""

    def __init__(self, model: Any, info: ModelInfo, *, example_batch: int = 2) -> None:
        self.model = model
        self.info = info
        self.example_batch = example_batch

    def call_impl(self) -> Any:
        import torch

        module = resolve(self.model)
        was_training = module.training
        module.eval()
        example = torch.zeros(self.example_batch, 3, *self.info.input_size)
        auto = torch.export.Dim.AUTO
        try:
            program = torch.export.export(
                module, (example,), dynamic_shapes=({0: auto, 2: auto, 3: auto},)
            )
        finally:
            module.train(was_training)
        log.info(
            "exported torch program model=%s ranges=%s", self.info.name, program.range_constraints
        )
        return program


class SaveProgram(Loader[Path]):
    """Save a program (or a loader of one) to ``path`` with the model metadata."""

    def __init__(self, program: Any, info: ModelInfo, path: str | Path) -> None:
        self.program = program
        self.info = info
        self.path = Path(path)

    def call_impl(self) -> Path:
        import torch

        program = resolve(self.program)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # torch.export.save wants the .pt2 suffix, so the partial file keeps it.
        partial = self.path.with_name(f".{self.path.stem}.partial.pt2")
        extra = {PT2_METADATA_FILE: json.dumps(self.info.to_metadata(), sort_keys=True)}
        torch.export.save(program, str(partial), extra_files=extra)
        os.replace(partial, self.path)
        return self.path
