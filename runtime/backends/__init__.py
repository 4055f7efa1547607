"""Inference backends behind one contract: ONNX Runtime, native TensorRT, PyTorch reference.

Heavy packages (onnxruntime, tensorrt, cuda-python, torch) are imported only when a
backend that needs them is built, so this package imports on any machine.
"""

from __future__ import annotations

from alscout.runtime.backends.base import Backend, TensorMeta
from alscout.runtime.backends.onnxruntime import OnnxRuntimeBackend, OrtOptions
from alscout.runtime.backends.profiles import ShapeProfile
from alscout.runtime.backends.registry import BACKEND_NAMES, open_backend

__all__ = [
    "Backend",
    "TensorMeta",
    "OnnxRuntimeBackend",
    "OrtOptions",
    "ShapeProfile",
    "BACKEND_NAMES",
    "open_backend",
]
