"""The one contract every inference backend follows (in the manner of Polygraphy runners).

Lifecycle: construct (= load: read the file, check the model contract, raise
:class:`ModelError` on any mismatch) -> :meth:`Backend.activate` (allocate sessions,
contexts, device buffers; run one small probe inference that checks the output's
shape and range) -> :meth:`Backend.infer` any number of times ->
:meth:`Backend.deactivate`. A backend is a context manager that activates on entry.
The public :meth:`Backend.infer` validates its input and then calls ``infer_impl``.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from alscout.errors import InvalidInputError, ModelError
from alscout.runtime.model_info import INPUT_NAME, OUTPUT_NAME, ModelInfo

__all__ = ["TensorMeta", "Backend", "check_io_contract"]

log = logging.getLogger(__name__)

#: Side of the square probe frame run at activation (pixels); large enough for any
#: encoder of a few stride-2 stages, small enough to cost milliseconds.
PROBE_SIDE = 64


@dataclass(frozen=True)
class TensorMeta:
    """Name, dtype and shape of one model input or output; ``None`` marks a dynamic dim."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


class Backend(abc.ABC):
    """Runs ``images [N, 3, H, W] float32`` (normalised RGB) to ``probs [N, K, H, W]``.

    Subclasses set :attr:`model_info`, :attr:`input_meta` and :attr:`output_meta` in
    their constructor (after calling :func:`check_io_contract`) and implement
    ``activate_impl``, ``infer_impl`` and ``deactivate_impl``.
    """

    #: registry name, e.g. "onnxruntime-cpu"
    name: str = ""
    model_info: ModelInfo
    input_meta: TensorMeta
    output_meta: TensorMeta
    source: str

    def __init__(self) -> None:
        self._active = False

    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> Backend:
        """Allocate what inference needs and check the model with one probe frame."""
        if self._active:
            return self
        self.activate_impl()
        self._active = True
        try:
            self._probe()
        except BaseException:
            self.deactivate()
            raise
        log.info("backend activated name=%s model=%s", self.name, self.source)
        return self

    def deactivate(self) -> None:
        """Free sessions and buffers; the backend may be activated again."""
        if not self._active:
            return
        self._active = False
        self.deactivate_impl()

    def __enter__(self) -> Backend:
        return self.activate()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.deactivate()

    def shape_problem(self, shape: tuple[int, ...]) -> str | None:
        """Why this backend cannot run an input of ``shape``, or None if it can."""
        return None

    def probe_shape(self) -> tuple[int, int, int, int]:
        """The input shape of the probe inference run at activation."""
        return (1, 3, PROBE_SIDE, PROBE_SIDE)

    def infer(self, images: np.ndarray) -> np.ndarray:
        """Run the model.

        ``images``: ``[N, 3, H, W]`` float32, normalised as :attr:`model_info` says.
        Returns ``probs``: ``[N, K, H, W]`` float32 in [0, 1].
        """
        if not self._active:
            raise InvalidInputError(
                f"backend {self.name} is not active: call activate() or use it in a with block"
            )
        if not isinstance(images, np.ndarray):
            raise InvalidInputError(f"images must be a numpy array, got {type(images).__name__}")
        if images.dtype != np.float32:
            raise InvalidInputError(f"images must be float32, got {images.dtype}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise InvalidInputError(f"images must be [N, 3, H, W], got shape {images.shape}")
        if min(images.shape) < 1:
            raise InvalidInputError(f"images must not be empty, got shape {images.shape}")
        problem = self.shape_problem(images.shape)
        if problem:
            raise InvalidInputError(f"backend {self.name} cannot run {images.shape}: {problem}")
        if not np.isfinite(images).all():
            raise InvalidInputError("images contain NaN or infinity")
        probs = self.infer_impl(np.ascontiguousarray(images))
        n, _, h, w = images.shape
        expected = (n, self.model_info.num_heads, h, w)
        if probs.shape != expected or probs.dtype != np.float32:
            raise ModelError(
                f"{self.source}: output {probs.dtype} {probs.shape} breaks the model contract "
                f"(expected float32 {expected})"
            )
        return probs

    def _probe(self) -> None:
        shape = self.probe_shape()
        images = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        try:
            probs = self.infer_impl(images)
        except ModelError:
            raise
        except Exception as error:  # backend libraries raise their own error types
            raise ModelError(
                f"{self.source}: probe inference on {shape} failed: {error}"
            ) from error
        n, _, h, w = shape
        k = self.model_info.num_heads
        if probs.shape != (n, k, h, w):
            raise ModelError(
                f"{self.source}: output shape {probs.shape} for input {shape}; metadata says "
                f"K={k}, so the contract needs {(n, k, h, w)}"
            )
        if probs.dtype != np.float32:
            raise ModelError(f"{self.source}: output dtype {probs.dtype}, contract needs float32")
        if not np.isfinite(probs).all() or probs.min() < 0.0 or probs.max() > 1.0:
            raise ModelError(f"{self.source}: outputs are not probabilities in [0, 1]")

    @abc.abstractmethod
    def activate_impl(self) -> None:
        """Allocate sessions, contexts and buffers."""

    @abc.abstractmethod
    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        """``images [N, 3, H, W]`` float32 C-contiguous -> ``probs [N, K, H, W]`` float32."""

    @abc.abstractmethod
    def deactivate_impl(self) -> None:
        """Free what ``activate_impl`` allocated."""


def check_io_contract(
    source: str | Path, info: ModelInfo, inputs: list[TensorMeta], outputs: list[TensorMeta]
) -> tuple[TensorMeta, TensorMeta]:
    """Check a model's inputs and outputs against SPEC §4; return (input, output) meta.

    Raises :class:`ModelError` naming ``source`` and the first mismatch found.
    """
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        names = [t.name for t in inputs]
        raise ModelError(
            f"{source}: model inputs are {names}; the contract needs one {INPUT_NAME!r}"
        )
    if len(outputs) != 1 or outputs[0].name != OUTPUT_NAME:
        names = [t.name for t in outputs]
        raise ModelError(
            f"{source}: model outputs are {names}; the contract needs one {OUTPUT_NAME!r}"
        )
    image, probs = inputs[0], outputs[0]
    for meta in (image, probs):
        if meta.dtype != "float32":
            raise ModelError(f"{source}: {meta.name} is {meta.dtype}; the contract needs float32")
        if len(meta.shape) != 4:
            raise ModelError(f"{source}: {meta.name} has rank {len(meta.shape)}, contract needs 4")
    if image.shape[1] not in (None, 3):
        raise ModelError(f"{source}: {INPUT_NAME} has {image.shape[1]} channels, contract needs 3")
    k = info.num_heads
    if probs.shape[1] is not None and probs.shape[1] != k:
        raise ModelError(
            f"{source}: {OUTPUT_NAME} has K={probs.shape[1]} channels but metadata says K={k}"
        )
    return image, probs
