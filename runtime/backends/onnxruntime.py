"""ONNX Runtime backend: CPU, CUDA (with IO binding) and TensorRT execution providers.

Runs plain models (``probs``) and models with the scores inside the graph (``z``,
``heatmap``, and ``probs`` only if kept) alike.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alscout.errors import BackendUnavailableError, ConfigError, ModelError
from alscout.runtime.backends.base import Backend, TensorMeta, check_io_contract
from alscout.runtime.backends.profiles import ShapeProfile, default_profiles, format_ort_shape
from alscout.runtime.model_info import INPUT_NAME, OUTPUT_NAME, ModelInfo, file_sha256

__all__ = ["OrtOptions", "OnnxRuntimeBackend", "DEVICES", "PROVIDERS"]

log = logging.getLogger(__name__)

#: device -> the execution provider that must serve it
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
DEVICES = tuple(PROVIDERS)
_OPT_LEVELS = ("disable", "basic", "extended", "all")
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8"}


@dataclass(frozen=True)
class OrtOptions:
    """Session options. ``intra_op_threads`` 0 lets ONNX Runtime use one per core.

    ``graph_optimization``: "disable" | "basic" | "extended" | "all" (fusions and
    layout changes; see docs/runtime.md for what each level measured).
    ``trt_*`` apply to the TensorRT provider only; ``trt_cache_dir`` "" uses
    ``$XDG_CACHE_HOME/alscout/ort-trt``.
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 1
    graph_optimization: str = "all"
    device_id: int = 0
    trt_fp16: bool = True
    trt_max_batch: int = 16
    trt_cache_dir: str = ""

    def __post_init__(self) -> None:
        if self.graph_optimization not in _OPT_LEVELS:
            raise ConfigError(
                f"graph_optimization must be one of {_OPT_LEVELS}, got {self.graph_optimization!r}"
            )
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ConfigError("thread counts must be >= 0")
        if self.device_id < 0 or self.trt_max_batch < 1:
            raise ConfigError("device_id must be >= 0 and trt_max_batch >= 1")


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX model through ONNX Runtime on ``device`` "cpu" | "cuda" | "tensorrt".

    The session is created at construction, which checks the file, its metadata and
    its inputs and outputs (SPEC §4); a provider that cannot serve (no GPU, package
    without it) raises :class:`BackendUnavailableError` instead of silently falling
    back to the CPU.
    """

    def __init__(
        self, model_path: str | Path, device: str = "cpu", options: OrtOptions | None = None
    ) -> None:
        super().__init__()
        import onnxruntime

        if device not in PROVIDERS:
            raise ConfigError(f"unknown onnxruntime device {device!r}; use one of {DEVICES}")
        self.options = options or OrtOptions()
        self.device = device
        self.name = f"onnxruntime-{device}"
        self.source = str(model_path)
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        provider = PROVIDERS[device]
        if provider not in onnxruntime.get_available_providers():
            raise BackendUnavailableError(
                f"{self.name}: this onnxruntime build has no {provider} "
                f"(available: {onnxruntime.get_available_providers()})"
            )
        sha256 = file_sha256(path)
        session_options = self._session_options(onnxruntime)
        # The contract is checked on a CPU session first: a bad model must be reported
        # as a ModelError even where the GPU provider would fail to start.
        try:
            self._session = onnxruntime.InferenceSession(
                str(path), sess_options=session_options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime's pybind errors share no useful base class
            raise ModelError(f"{path}: ONNX Runtime cannot load this model: {error}") from error
        metadata = self._session.get_modelmeta().custom_metadata_map
        self.model_info = ModelInfo.from_metadata(metadata, source=path, sha256=sha256)
        self.input_meta, self.output_meta = check_io_contract(
            path,
            self.model_info,
            [_tensor_meta(arg) for arg in self._session.get_inputs()],
            [_tensor_meta(arg) for arg in self._session.get_outputs()],
        )
        self.output_names = tuple(arg.name for arg in self._session.get_outputs())
        self._path = path
        self._session_options_obj = session_options
        if device != "cpu":
            self._session = self._gpu_session(onnxruntime, provider)
        self._binding: Any = None

    def _session_options(self, onnxruntime: Any) -> Any:
        options = onnxruntime.SessionOptions()
        levels = {
            "disable": onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        options.graph_optimization_level = levels[self.options.graph_optimization]
        options.intra_op_num_threads = self.options.intra_op_threads
        options.inter_op_num_threads = self.options.inter_op_threads
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        return options

    def _gpu_session(self, onnxruntime: Any, provider: str) -> Any:
        providers: list[Any] = []
        if self.device == "tensorrt":
            providers.append((provider, self._trt_provider_options()))
        providers.append(("CUDAExecutionProvider", {"device_id": self.options.device_id}))
        try:
            session = onnxruntime.InferenceSession(
                str(self._path), sess_options=self._session_options_obj, providers=providers
            )
        except Exception as error:  # a missing CUDA library surfaces as a plain RuntimeError
            raise BackendUnavailableError(f"{self.name}: cannot start: {error}") from error
        active = session.get_providers()
        if not active or active[0] != provider:
            raise BackendUnavailableError(
                f"{self.name}: {provider} did not start (session runs on {active}); "
                "is a GPU with a matching CUDA/TensorRT present?"
            )
        return session

    def _trt_provider_options(self) -> dict[str, Any]:
        profile = self.profile
        cache = self.options.trt_cache_dir or os.path.join(
            os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "alscout", "ort-trt"
        )
        os.makedirs(cache, exist_ok=True)
        return {
            "device_id": self.options.device_id,
            "trt_fp16_enable": self.options.trt_fp16,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True,
            "trt_profile_min_shapes": format_ort_shape(INPUT_NAME, profile.images_shape("min")),
            "trt_profile_opt_shapes": format_ort_shape(INPUT_NAME, profile.images_shape("opt")),
            "trt_profile_max_shapes": format_ort_shape(INPUT_NAME, profile.images_shape("max")),
        }

    @property
    def profile(self) -> ShapeProfile:
        """The shape range the TensorRT provider builds for (one general profile)."""
        return default_profiles(self.model_info.input_size, self.options.trt_max_batch)[-1]

    def shape_problem(self, shape: tuple[int, ...]) -> str | None:
        if self.device == "tensorrt" and not self.profile.covers(shape):
            return f"outside the TensorRT profile {self.profile.to_json()}"
        return None

    def activate_impl(self) -> None:
        if self.device != "cpu":
            self._binding = self._session.io_binding()

    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        if self._binding is None:
            return self._session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
        # IO binding: the output stays on the GPU until one copy back, and ONNX Runtime
        # does not stage the input through its own CPU buffer first.
        self._binding.clear_binding_inputs()
        self._binding.clear_binding_outputs()
        self._binding.bind_cpu_input(INPUT_NAME, images)
        self._binding.bind_output(OUTPUT_NAME, "cuda", self.options.device_id)
        self._session.run_with_iobinding(self._binding)
        return self._binding.copy_outputs_to_cpu()[0]

    def infer_outputs_impl(self, images: np.ndarray) -> dict[str, np.ndarray]:
        # Only the model's own outputs leave the session: for a model with the scores in
        # its graph, z and the heat map, not the probabilities.
        if self._binding is None:
            values = self._session.run(list(self.output_names), {INPUT_NAME: images})
        else:
            self._binding.clear_binding_inputs()
            self._binding.clear_binding_outputs()
            self._binding.bind_cpu_input(INPUT_NAME, images)
            for name in self.output_names:
                self._binding.bind_output(name, "cuda", self.options.device_id)
            self._session.run_with_iobinding(self._binding)
            values = self._binding.copy_outputs_to_cpu()
        return dict(zip(self.output_names, values, strict=True))

    def deactivate_impl(self) -> None:
        self._binding = None


def _tensor_meta(arg: Any) -> TensorMeta:
    shape = tuple(dim if isinstance(dim, int) and dim > 0 else None for dim in arg.shape)
    return TensorMeta(name=arg.name, dtype=_ORT_DTYPES.get(arg.type, arg.type), shape=shape)
