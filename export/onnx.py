"""Export a PyTorch detector to an ONNX file that follows the model contract (SPEC §4).

``OnnxFromTorch(model, info)`` traces the module with dynamic N, H, W, fixes K in the
output's shape, writes the metadata props and checks the result with
``onnx.checker`` (full check) and strict shape inference. A model whose info says
``difficulty`` (a detector with the learned difficulty head, traced through the
trainer's ``export_module``) gets the second output ``difficulty [N, 1, H, W]``.
``OnnxFromPath`` loads and checks an existing file; ``SaveOnnx`` writes one atomically.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from alscout.errors import ModelError
from alscout.export.loaders import Loader, resolve
from alscout.runtime.model_info import (
    DIFFICULTY_NAME,
    HEATMAP_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    Z_NAME,
    ModelInfo,
    Normalisation,
)

__all__ = [
    "DEFAULT_OPSET",
    "OnnxFromTorch",
    "OnnxFromPath",
    "SaveOnnx",
    "check_onnx",
    "info_from_detector",
]

log = logging.getLogger(__name__)

#: Opset 17 runs on every ONNX Runtime >= 1.13 and TensorRT >= 8.6.
DEFAULT_OPSET = 17
_DYNAMIC = {0: "N", 2: "H", 3: "W"}


def info_from_detector(
    detector: Any,
    *,
    training_data_digest: str,
    input_size: tuple[int, int] | None = None,
    version: str | None = None,
    difficulty: bool | None = None,
) -> ModelInfo:
    """The metadata of a trainer ``Detector``: its name, version, K and normalisation.

    ``input_size`` (height, width) is the training input size (default: the
    detector's reference size); default boxes are scaled to it. ``difficulty``:
    whether the export has the ``difficulty`` output (default: whether the detector
    has the difficulty head; False exports a head's detector with ``probs`` only).
    The heads' strides go with it, so the runtime decodes as ``alscout evaluate`` does.
    """
    config = detector.config
    height, width = input_size or config.reference_size
    boxes = tuple((float(h), float(w)) for h, w in config.boxes_at(height, width))
    return ModelInfo(
        name=config.name,
        version=version or config.version,
        num_heads=config.num_heads,
        default_boxes=boxes,
        input_size=(height, width),
        normalisation=Normalisation(mean=config.mean, std=config.std, scale=1.0 / 255.0),
        training_data_digest=training_data_digest,
        difficulty=bool(getattr(config, "difficulty_head", False))
        if difficulty is None
        else difficulty,
        head_strides=config.head_strides,
    )


class OnnxFromTorch(Loader[Any]):
    """Trace a module ``images [N,3,H,W] -> probs [N,K,H,W]`` to an ``onnx.ModelProto``.

    With ``info.difficulty`` the module returns ``(probs, difficulty [N,1,H,W])``
    (the trainer's ``DetectorWithDifficulty``) and both become outputs.

    ``model``: a torch module, or a loader / function returning one. It is traced in
    eval mode (its mode is restored afterwards) on a zero batch of ``example_batch``
    frames at ``info.input_size``. Uses the TorchScript-based exporter: the dynamo one
    needs ``onnxscript``, which the train extra does not install.
    """

    def __init__(
        self, model: Any, info: ModelInfo, *, opset: int = DEFAULT_OPSET, example_batch: int = 2
    ) -> None:
        self.model = model
        self.info = info
        self.opset = opset
        self.example_batch = example_batch

    def call_impl(self) -> Any:
        import onnx
        import torch

        module = resolve(self.model)
        height, width = self.info.input_size
        example = torch.zeros(self.example_batch, 3, height, width)
        was_training = module.training
        module.eval()
        buffer = io.BytesIO()
        outputs = [OUTPUT_NAME, DIFFICULTY_NAME] if self.info.difficulty else [OUTPUT_NAME]
        try:
            with warnings.catch_warnings():
                # The TorchScript exporter announces its own deprecation on every call.
                warnings.simplefilter("ignore", category=DeprecationWarning)
                warnings.simplefilter("ignore", category=FutureWarning)
                warnings.simplefilter("ignore", category=UserWarning)
                # Shape checks inside torch (group_norm) are constants for the trace; the
                # export is verified against PyTorch afterwards instead.
                warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
                torch.onnx.export(
                    module,
                    (example,),
                    # torch types ``f`` as a path, but the TorchScript exporter
                    # (dynamo=False) writes to a file object as well
                    buffer,  # type: ignore[arg-type]
                    input_names=[INPUT_NAME],
                    output_names=outputs,
                    opset_version=self.opset,
                    dynamo=False,
                    dynamic_axes={INPUT_NAME: _DYNAMIC} | {name: _DYNAMIC for name in outputs},
                    do_constant_folding=True,
                )
        except RuntimeError as error:
            if "number of output names" not in str(error):
                raise
            raise ModelError(
                f"export of {self.info.name} {self.info.version}: the module gives fewer "
                f"outputs than {outputs} ({error}); a detector with the difficulty head "
                "is exported through alscout.trainer.model.export_module"
            ) from error
        finally:
            module.train(was_training)
        model = onnx.load_from_string(buffer.getvalue())
        # The exporter names K symbolically; the contract (and TensorRT) want it fixed.
        channels = {OUTPUT_NAME: self.info.num_heads, DIFFICULTY_NAME: 1}
        for value in model.graph.output:
            if value.name in channels:
                dim = value.type.tensor_type.shape.dim[1]
                dim.Clear()
                dim.dim_value = channels[value.name]
        onnx.helper.set_model_props(model, self.info.to_metadata())
        model.producer_name = "alscout"
        model.doc_string = f"{self.info.name} {self.info.version}: pedestrian head probabilities"
        check_onnx(model, source=f"export of {self.info.name} {self.info.version}")
        log.info(
            "exported to ONNX model=%s version=%s opset=%d",
            self.info.name,
            self.info.version,
            self.opset,
        )
        return model


class OnnxFromPath(Loader[Any]):
    """Load an ONNX file and check it against the model contract."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def call_impl(self) -> Any:
        import onnx

        try:
            model = onnx.load(str(self.path))
        except FileNotFoundError as error:
            raise ModelError(f"{self.path}: model file not found") from error
        except Exception as error:  # protobuf's DecodeError and friends share no base
            raise ModelError(f"{self.path}: not an ONNX model: {error}") from error
        check_onnx(model, source=self.path)
        return model


class SaveOnnx(Loader[Any]):
    """Write the model another loader produces to ``path`` (atomically) and return it."""

    def __init__(self, model: Any, path: str | Path) -> None:
        self.model = model
        self.path = Path(path)

    def call_impl(self) -> Any:
        model = resolve(self.model)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_bytes(model.SerializeToString())
        os.replace(partial, self.path)
        log.info("saved ONNX model path=%s bytes=%d", self.path, self.path.stat().st_size)
        return model


def check_onnx(model: Any, *, source: str | Path) -> ModelInfo:
    """Check an ``onnx.ModelProto`` against SPEC §4 and return its metadata.

    Runs ``onnx.checker`` (full check) and strict shape inference, then checks the one
    input ``images`` float32 ``(N, 3, H, W)`` with dynamic N, H, W and the outputs: one
    ``probs`` float32 ``(N, K, H, W)``, K equal to the metadata's, then, for a model
    with the difficulty head (``alscout.difficulty``), ``difficulty`` ``(N, 1, H, W)``;
    or, for a model with the scores inside its graph (``alscout.scores.*`` metadata),
    ``z`` ``(N,)`` and ``heatmap`` ``(N, h, w)`` float32, then ``probs`` only if kept.
    """
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ModelError(f"{source}: ONNX check failed: {error}") from error
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    info = ModelInfo.from_metadata(metadata, source=source)
    initializers = {init.name for init in inferred.graph.initializer}
    inputs = [v for v in inferred.graph.input if v.name not in initializers]
    outputs = list(inferred.graph.output)
    if [v.name for v in inputs] != [INPUT_NAME]:
        raise ModelError(f"{source}: inputs are {[v.name for v in inputs]}, need [{INPUT_NAME!r}]")
    names = [v.name for v in outputs]
    if info.scoring is None:
        allowed: list[list[str]] = [
            [OUTPUT_NAME, DIFFICULTY_NAME] if info.difficulty else [OUTPUT_NAME]
        ]
    else:
        allowed = [[Z_NAME, HEATMAP_NAME], [Z_NAME, HEATMAP_NAME, OUTPUT_NAME]]
    if names not in allowed:
        need = " or ".join(str(a) for a in allowed)
        raise ModelError(f"{source}: outputs are {names}, need {need}")
    ranks = {INPUT_NAME: 4, OUTPUT_NAME: 4, Z_NAME: 1, HEATMAP_NAME: 3, DIFFICULTY_NAME: 4}
    channels = {INPUT_NAME: 3, OUTPUT_NAME: info.num_heads, DIFFICULTY_NAME: 1}
    for value in (inputs[0], *outputs):
        tensor = value.type.tensor_type
        if tensor.elem_type != onnx.TensorProto.FLOAT:
            raise ModelError(f"{source}: {value.name} is not float32")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if len(dims) != ranks[value.name]:
            raise ModelError(
                f"{source}: {value.name} has rank {len(dims)}, need {ranks[value.name]}"
            )
        if value.name in channels and dims[1] != channels[value.name]:
            raise ModelError(
                f"{source}: {value.name} has {dims[1]} channels, need {channels[value.name]}"
                + (" (K from metadata)" if value.name == OUTPUT_NAME else "")
            )
        dynamic = (0, 2, 3) if len(dims) == 4 else tuple(range(len(dims)))
        fixed = [axis for axis in dynamic if dims[axis] is not None]
        if fixed:
            what = "N, H, W" if len(dims) == 4 else "every axis"
            raise ModelError(
                f"{source}: {value.name} axes {fixed} are fixed; {what} must be dynamic"
            )
    return info
