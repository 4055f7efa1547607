"""A stand-in for ``tensorrt`` and cuda-python's ``cudart`` on machines without a GPU.

It implements just the API surface alscout's engine builder, INT8 calibrator and
TensorRT backend call, with the semantics that matter to them: an "engine" is the
ONNX model plus its optimization profiles, executed by ONNX Runtime on the CPU;
"device memory" is host memory, so pointers are real addresses and copies are
``ctypes.memmove``. Shapes outside the active profile are refused as TensorRT does.
``install(monkeypatch)`` puts both modules into ``sys.modules``.

Real TensorRT runs in the GPU tests; this fake lets the code paths around it (profile
choice, buffer management, sidecars, the cache, calibration feeding) run everywhere.
"""

from __future__ import annotations

import ctypes
import enum
import json
import struct
import sys
import types

import numpy as np
import onnxruntime

MAGIC = b"FAKETRT1"
VERSION = "10.99.0-fake"


# --- cudart ------------------------------------------------------------------------------


# Member names are CUDA's own, which the code under test spells out.
class _Error(enum.Enum):
    cudaSuccess = 0  # noqa: N815 - CUDA's name
    cudaErrorMemoryAllocation = 2  # noqa: N815 - CUDA's name


class _Kind(enum.Enum):
    cudaMemcpyHostToDevice = 1  # noqa: N815 - CUDA's name
    cudaMemcpyDeviceToHost = 2  # noqa: N815 - CUDA's name


class _Stream:
    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __int__(self) -> int:
        return self.handle


class _DeviceProp:
    name = b"Fake GPU 9000\x00\x00"
    major, minor = 9, 0


def _make_cudart() -> types.ModuleType:
    cudart = types.ModuleType("cuda.bindings.runtime")
    live: dict[int, np.ndarray] = {}
    cudart.cudaError_t = _Error
    cudart.cudaMemcpyKind = _Kind
    cudart.live_allocations = live

    def cudaMalloc(nbytes):
        buffer = np.zeros(max(1, int(nbytes)), np.uint8)
        live[buffer.ctypes.data] = buffer
        return (_Error.cudaSuccess, buffer.ctypes.data)

    def cudaFree(pointer):
        live.pop(int(pointer))
        return (_Error.cudaSuccess,)

    def cudaMemcpy(dst, src, nbytes, kind):
        ctypes.memmove(int(dst), int(src), int(nbytes))
        return (_Error.cudaSuccess,)

    cudart.cudaMalloc = cudaMalloc
    cudart.cudaFree = cudaFree
    cudart.cudaMemcpy = cudaMemcpy
    cudart.cudaMemcpyAsync = lambda dst, src, n, kind, stream: cudaMemcpy(dst, src, n, kind)
    cudart.cudaSetDevice = lambda device: (_Error.cudaSuccess,)
    cudart.cudaStreamCreate = lambda: (_Error.cudaSuccess, _Stream(7))
    cudart.cudaStreamDestroy = lambda stream: (_Error.cudaSuccess,)
    cudart.cudaStreamSynchronize = lambda stream: (_Error.cudaSuccess,)
    cudart.cudaGetDeviceProperties = lambda device: (_Error.cudaSuccess, _DeviceProp())
    cudart.cudaGetErrorName = lambda error: (_Error.cudaSuccess, error.name.encode())
    return cudart


# --- tensorrt ------------------------------------------------------------------------------


class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class _Engine:
    def __init__(self, header: dict, onnx_bytes: bytes) -> None:
        self.header = header
        self.session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        self.k = self.session.get_outputs()[0].shape[1]
        self.num_io_tensors = 2
        self.num_optimization_profiles = len(header["profiles"])

    def get_tensor_name(self, index: int) -> str:
        return ["images", "probs"][index]

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, 3, -1, -1) if name == "images" else (-1, self.k, -1, -1)

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name == "images" else TensorIOMode.OUTPUT

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self.header["profiles"][index]]

    def create_execution_context(self) -> _Context:
        return _Context(self)


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.profile = 0
        self.shape: tuple[int, ...] | None = None
        self.addresses: dict[str, int] = {}
        self.profiles_used: list[int] = []

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        assert isinstance(stream, int)
        self.profile = index
        return True

    def set_input_shape(self, name: str, shape) -> bool:
        lo, _, hi = self.engine.get_tensor_profile_shape(name, self.profile)
        if not all(a <= b <= c for a, b, c in zip(lo, shape, hi, strict=True)):
            return False
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        n, _, h, w = self.shape
        return (n, 3, h, w) if name == "images" else (n, self.engine.k, h, w)

    def set_tensor_address(self, name: str, pointer: int) -> bool:
        self.addresses[name] = int(pointer)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        assert isinstance(stream, int)
        count = int(np.prod(self.shape))
        raw = (ctypes.c_float * count).from_address(self.addresses["images"])
        images = np.ctypeslib.as_array(raw).reshape(self.shape).copy()
        if self.engine.header["precision"] in ("fp16", "int8"):
            images = images.astype(np.float16).astype(np.float32)
        probs = self.engine.session.run(None, {"images": images})[0]
        if self.engine.header["precision"] in ("fp16", "int8"):
            probs = probs.astype(np.float16).astype(np.float32)
        ctypes.memmove(self.addresses["probs"], probs.ctypes.data, probs.nbytes)
        self.profiles_used.append(self.profile)
        return True


class Logger:
    WARNING = 2

    def __init__(self, severity: int = 2) -> None:
        self.severity = severity


class Runtime:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes) -> _Engine | None:
        if not data.startswith(MAGIC):
            return None
        (size,) = struct.unpack("<I", data[8:12])
        header = json.loads(data[12 : 12 + size])
        return _Engine(header, data[12 + size :])


class BuilderFlag(enum.Enum):
    FP16 = 1
    INT8 = 2


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name, minimum, opt, maximum) -> None:
        self.shapes[name] = (tuple(minimum), tuple(opt), tuple(maximum))


class _Config:
    def __init__(self) -> None:
        self.flags: set = set()
        self.profiles: list[_Profile] = []
        self.int8_calibrator = None
        self.calibration_profile: _Profile | None = None
        self.workspace = 0

    def set_memory_pool_limit(self, pool, size: int) -> None:
        self.workspace = size

    def set_flag(self, flag) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile: _Profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_calibration_profile(self, profile: _Profile) -> None:
        self.calibration_profile = profile


class _Network:
    onnx: bytes = b""


class OnnxParser:
    def __init__(self, network: _Network, logger: Logger) -> None:
        self.network = network
        self.errors: list[str] = []

    def parse(self, data: bytes) -> bool:
        try:
            onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - any load failure is a parse error
            self.errors.append(str(error))
            return False
        self.network.onnx = data
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> str:
        return self.errors[index]


class Builder:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger
        self.calibration_batches = 0

    def create_network(self, flags: int = 0) -> _Network:
        return _Network()

    def create_builder_config(self) -> _Config:
        return _Config()

    def create_optimization_profile(self) -> _Profile:
        return _Profile()

    def build_serialized_network(self, network: _Network, config: _Config) -> bytes:
        precision = "fp32"
        if BuilderFlag.FP16 in config.flags:
            precision = "fp16"
        if BuilderFlag.INT8 in config.flags:
            precision = "int8"
            calibrator = config.int8_calibrator
            if calibrator.read_calibration_cache() is None:
                while calibrator.get_batch(["images"]) is not None:
                    self.calibration_batches += 1
                calibrator.write_calibration_cache(b"fake-table")
        header = {
            "precision": precision,
            "profiles": [p.shapes["images"] for p in config.profiles],
        }
        blob = json.dumps(header).encode()
        return MAGIC + struct.pack("<I", len(blob)) + blob + network.onnx


class IInt8EntropyCalibrator2:
    def __init__(self) -> None:
        pass


def _make_tensorrt() -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    for name, value in {
        "__version__": VERSION,
        "Logger": Logger,
        "Runtime": Runtime,
        "Builder": Builder,
        "OnnxParser": OnnxParser,
        "BuilderFlag": BuilderFlag,
        "MemoryPoolType": MemoryPoolType,
        "TensorIOMode": TensorIOMode,
        "IInt8EntropyCalibrator2": IInt8EntropyCalibrator2,
        "nptype": lambda dtype: np.dtype(dtype).type,
    }.items():
        setattr(trt, name, value)
    return trt


def install(monkeypatch) -> types.ModuleType:
    """Put fake ``tensorrt`` and ``cuda.bindings.runtime`` into ``sys.modules``; returns
    the fake cudart (its ``live_allocations`` shows what is still allocated)."""
    cudart = _make_cudart()
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, "tensorrt", _make_tensorrt())
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    return cudart


def engine_bytes(onnx_bytes: bytes, profiles: list, precision: str = "fp16") -> bytes:
    """A fake serialized engine: ``profiles`` as ``[(min, opt, max), ...]`` images shapes."""
    header = {"precision": precision, "profiles": [[list(s) for s in p] for p in profiles]}
    blob = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(blob)) + blob + onnx_bytes
