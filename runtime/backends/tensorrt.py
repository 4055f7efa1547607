"""Native TensorRT backend: a serialized engine run through TensorRT's Python API.

Device memory and streams go through cuda-python's runtime bindings (``cudart``), as
TensorRT's own Python samples do; neither package is imported until a backend is
built. An engine file ``model.engine`` comes with its sidecar ``model.engine.json``
(written by ``alscout export trt``) that holds the model metadata, the TensorRT
version and GPU it was built for, and its optimization profiles.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from alscout.errors import BackendUnavailableError, ModelError
from alscout.runtime.backends.base import Backend, TensorMeta, check_io_contract
from alscout.runtime.backends.profiles import ShapeProfile
from alscout.runtime.model_info import INPUT_NAME, OUTPUT_NAME, ModelInfo, file_sha256

__all__ = ["TensorRTBackend", "sidecar_path", "import_tensorrt", "import_cudart", "cuda_call"]

log = logging.getLogger(__name__)


def sidecar_path(engine_path: str | Path) -> Path:
    """Where the metadata of an engine file lives: ``<engine>.json``."""
    path = Path(engine_path)
    return path.with_name(path.name + ".json")


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`BackendUnavailableError` saying how to get it."""
    try:
        import tensorrt
    except ImportError as error:
        raise BackendUnavailableError(
            "tensorrt is not installed (pip install 'alscout[gpu]' on a machine with a GPU)"
        ) from error
    return tensorrt


def import_cudart() -> Any:
    """cuda-python's runtime API module (``cuda.bindings.runtime``, or ``cuda.cudart``)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as error:
            raise BackendUnavailableError(
                "cuda-python is not installed (pip install cuda-python)"
            ) from error
    return cudart


def cuda_call(result: Any) -> Any:
    """Unpack a cudart call's ``(error, value...)`` tuple, raising on a CUDA error."""
    cudart = import_cudart()
    error, *values = result if isinstance(result, tuple) else (result,)
    if error != cudart.cudaError_t.cudaSuccess:
        _, name = cudart.cudaGetErrorName(error)
        raise BackendUnavailableError(f"CUDA call failed: {name.decode()}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class TensorRTBackend(Backend):
    """Runs a TensorRT engine on one GPU; picks the first profile covering each shape."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, device_id: int = 0) -> None:
        super().__init__()
        path = Path(engine_path)
        self.source = str(path)
        self.device_id = device_id
        if not path.is_file():
            raise ModelError(f"{path}: engine file not found")
        # Metadata first: a file without it is refused even where TensorRT is absent.
        sidecar = _read_sidecar(path)
        self.model_info = ModelInfo.from_metadata(
            sidecar["metadata"],
            source=path,
            sha256=file_sha256(path),
            source_sha256=sidecar.get("onnx_sha256", ""),
            file_format="tensorrt",
        )
        if self.model_info.scoring is not None:
            raise ModelError(
                f"{path}: the native TensorRT backend does not run models with the scores "
                "inside the graph yet; serve the ONNX file (backend onnxruntime-tensorrt "
                "runs it with TensorRT)"
            )
        trt = import_tensorrt()
        self._cudart = import_cudart()
        built_with = sidecar.get("tensorrt_version", "")
        if built_with and built_with != trt.__version__:
            raise ModelError(
                f"{path}: engine built with TensorRT {built_with}, this machine has "
                f"{trt.__version__}; rebuild it with `alscout export trt`"
            )
        cuda_call(self._cudart.cudaSetDevice(device_id))
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise ModelError(
                f"{path}: TensorRT could not deserialize the engine (corrupt, or built for "
                "another GPU or TensorRT version)"
            )
        inputs, outputs = self._io_meta(trt)
        self.input_meta, self.output_meta = check_io_contract(
            path, self.model_info, inputs, outputs
        )
        self.profiles = tuple(
            ShapeProfile(*(_nhw(d) for d in self._engine.get_tensor_profile_shape(INPUT_NAME, i)))
            for i in range(self._engine.num_optimization_profiles)
        )
        self._context: Any = None
        self._stream: Any = None
        self._profile_index = -1
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _io_meta(self, trt: Any) -> tuple[list[TensorMeta], list[TensorMeta]]:
        inputs: list[TensorMeta] = []
        outputs: list[TensorMeta] = []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))).name
            shape = tuple(d if d >= 0 else None for d in self._engine.get_tensor_shape(name))
            meta = TensorMeta(name, dtype, shape)
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(meta)
        return inputs, outputs

    def shape_problem(self, shape: tuple[int, ...]) -> str | None:
        if any(profile.covers(shape) for profile in self.profiles):
            return None
        return f"no optimization profile covers it ({[p.to_json() for p in self.profiles]})"

    def probe_shape(self) -> tuple[int, int, int, int]:
        return self.profiles[0].images_shape("min")

    def activate_impl(self) -> None:
        cuda_call(self._cudart.cudaSetDevice(self.device_id))
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendUnavailableError(f"{self.source}: cannot create an execution context")
        self._stream = cuda_call(self._cudart.cudaStreamCreate())
        self._profile_index = -1

    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        index = next(i for i, p in enumerate(self.profiles) if p.covers(images.shape))
        if index != self._profile_index:
            self._context.set_optimization_profile_async(index, int(self._stream))
            self._profile_index = index
        if not self._context.set_input_shape(INPUT_NAME, images.shape):
            raise ModelError(f"{self.source}: TensorRT refused input shape {images.shape}")
        out_shape = tuple(self._context.get_tensor_shape(OUTPUT_NAME))
        probs = np.empty(out_shape, dtype=np.float32)
        d_images = self._device_buffer(INPUT_NAME, images.nbytes)
        d_probs = self._device_buffer(OUTPUT_NAME, probs.nbytes)
        cuda_call(
            cudart.cudaMemcpyAsync(
                d_images,
                images.ctypes.data,
                images.nbytes,
                cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                self._stream,
            )
        )
        self._context.set_tensor_address(INPUT_NAME, d_images)
        self._context.set_tensor_address(OUTPUT_NAME, d_probs)
        # TensorRT takes the raw handle; cudart calls take cuda-python's stream object.
        if not self._context.execute_async_v3(int(self._stream)):
            raise ModelError(f"{self.source}: TensorRT execution failed for {images.shape}")
        cuda_call(
            cudart.cudaMemcpyAsync(
                probs.ctypes.data,
                d_probs,
                probs.nbytes,
                cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                self._stream,
            )
        )
        cuda_call(cudart.cudaStreamSynchronize(self._stream))
        return probs

    def _device_buffer(self, name: str, nbytes: int) -> int:
        """A device buffer of at least ``nbytes`` for tensor ``name``; grows, never shrinks."""
        pointer, size = self._buffers.get(name, (0, 0))
        if size >= nbytes:
            return pointer
        if pointer:
            cuda_call(self._cudart.cudaFree(pointer))
        pointer = int(cuda_call(self._cudart.cudaMalloc(nbytes)))
        self._buffers[name] = (pointer, nbytes)
        return pointer

    def deactivate_impl(self) -> None:
        for pointer, _ in self._buffers.values():
            cuda_call(self._cudart.cudaFree(pointer))
        self._buffers.clear()
        if self._stream is not None:
            cuda_call(self._cudart.cudaStreamDestroy(self._stream))
        self._stream = None
        self._context = None


def _nhw(dims: Any) -> tuple[int, int, int]:
    n, _, h, w = (int(v) for v in dims)
    return (n, h, w)


def _read_sidecar(path: Path) -> dict[str, Any]:
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise ModelError(
            f"{path}: no metadata sidecar {sidecar.name}; build engines with `alscout export trt`"
        )
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(f"{sidecar}: unreadable engine metadata: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("metadata"), dict):
        raise ModelError(f"{sidecar}: engine metadata needs a 'metadata' object")
    return data
