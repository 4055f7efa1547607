"""Open a model file with a named backend, or with the best one this machine has."""

from __future__ import annotations

import logging
from pathlib import Path

from alscout.errors import BackendUnavailableError, ConfigError, ModelError
from alscout.runtime.backends.base import Backend
from alscout.runtime.backends.onnxruntime import OnnxRuntimeBackend, OrtOptions

__all__ = ["BACKEND_NAMES", "FORMATS", "model_format", "open_backend"]

log = logging.getLogger(__name__)

BACKEND_NAMES = (
    "auto",
    "onnxruntime-cpu",
    "onnxruntime-cuda",
    "onnxruntime-tensorrt",
    "tensorrt",
    "torch",
)
#: file suffix -> model format
FORMATS = {".onnx": "onnx", ".engine": "tensorrt", ".plan": "tensorrt", ".pt2": "pt2"}
#: backends that can run each format, best first (the order "auto" tries)
_CANDIDATES = {
    "onnx": ("onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu"),
    "tensorrt": ("tensorrt",),
    "pt2": ("torch",),
}


def model_format(model_path: str | Path) -> str:
    """ "onnx" | "tensorrt" | "pt2", from the file's suffix."""
    suffix = Path(model_path).suffix.lower()
    if suffix not in FORMATS:
        raise ModelError(
            f"{model_path}: unknown model format {suffix!r}; expected one of {tuple(FORMATS)}"
        )
    return FORMATS[suffix]


def open_backend(
    model_path: str | Path,
    name: str = "auto",
    *,
    ort_options: OrtOptions | None = None,
    device_id: int = 0,
    threads: int = 0,
) -> Backend:
    """Load ``model_path`` with backend ``name`` (one of :data:`BACKEND_NAMES`).

    The returned backend is loaded and its model contract checked, but not yet
    activated. "auto" tries the backends able to run the file's format, best first
    (TensorRT provider, CUDA provider, CPU for ONNX), and logs why it skipped each.
    Raises :class:`ModelError` for a bad file, :class:`BackendUnavailableError` when no
    backend can run here, :class:`ConfigError` for an unknown name or format mismatch.
    """
    if name not in BACKEND_NAMES:
        raise ConfigError(f"unknown backend {name!r}; use one of {BACKEND_NAMES}")
    fmt = model_format(model_path)
    candidates = _CANDIDATES[fmt]
    if name != "auto":
        if name not in candidates:
            raise ConfigError(
                f"backend {name} cannot run a {fmt} file ({model_path}); use one of {candidates}"
            )
        return _open(model_path, name, ort_options, device_id, threads)
    reasons = []
    for candidate in candidates:
        try:
            backend = _open(model_path, candidate, ort_options, device_id, threads)
        except BackendUnavailableError as error:
            log.info("backend skipped name=%s reason=%s", candidate, error)
            reasons.append(str(error))
            continue
        skipped = f" (skipped: {'; '.join(reasons)})" if reasons else ""
        log.info("backend chosen name=%s model=%s%s", candidate, model_path, skipped)
        return backend
    raise BackendUnavailableError(f"no backend can run {model_path}: {'; '.join(reasons)}")


def _open(
    model_path: str | Path,
    name: str,
    ort_options: OrtOptions | None,
    device_id: int,
    threads: int,
) -> Backend:
    if name.startswith("onnxruntime-"):
        options = ort_options or OrtOptions(device_id=device_id, intra_op_threads=threads)
        return OnnxRuntimeBackend(
            model_path, device=name.removeprefix("onnxruntime-"), options=options
        )
    if name == "tensorrt":
        from alscout.runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(model_path, device_id=device_id)
    from alscout.runtime.backends.torch_reference import TorchBackend

    return TorchBackend.from_file(model_path, threads=threads)
