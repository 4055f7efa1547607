"""The one contract every inference backend follows (in the manner of Polygraphy runners).

Lifecycle: construct (= load: read the file, check the model contract, raise
:class:`ModelError` on any mismatch) -> :meth:`Backend.activate` (allocate sessions,
contexts, device buffers; run one small probe inference that checks the output's
shape and range) -> :meth:`Backend.infer` any number of times ->
:meth:`Backend.deactivate`. A backend is a context manager that activates on entry.
The public :meth:`Backend.infer` validates its input and then calls ``infer_impl``.

A model with the scores inside its graph (``ModelInfo.scoring`` set) outputs ``z``
and ``heatmap`` (and ``probs`` only if it was exported with them):
:meth:`Backend.infer_scores` runs it through ``infer_outputs_impl``, which the
backends able to run such models implement.

A model with the learned difficulty head (``ModelInfo.difficulty``) outputs
``difficulty [N, 1, H, W]`` after ``probs``: :meth:`Backend.infer` still returns
``probs`` alone, :meth:`Backend.infer_with_difficulty` both (through
``infer_outputs_impl`` as well).
"""

from __future__ import annotations

import abc
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from alscout.errors import BackendUnavailableError, InvalidInputError, ModelError
from alscout.runtime.model_info import (
    DIFFICULTY_NAME,
    HEATMAP_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    Z_NAME,
    ModelInfo,
)

__all__ = ["TensorMeta", "GraphScores", "Backend", "check_io_contract"]

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


@dataclass(frozen=True)
class GraphScores:
    """The outputs of a model with the scores inside its graph, for N frames.

    ``z``: ``[N]`` float32 image scores; ``heatmap``: ``[N, ceil(H/s), ceil(W/s)]``
    float32 block maxima of the score map (s = ``ModelInfo.scoring.heatmap_stride``);
    ``probs``: ``[N, K, H, W]`` float32 (mirrors merged when the graph double-evaluates)
    if the model keeps them, else None.
    """

    z: np.ndarray
    heatmap: np.ndarray
    probs: np.ndarray | None = None


class Backend(abc.ABC):
    """Runs ``images [N, 3, H, W] float32`` (normalised RGB) to ``probs [N, K, H, W]``.

    Subclasses set :attr:`model_info`, :attr:`input_meta` and :attr:`output_meta` in
    their constructor (after calling :func:`check_io_contract`) and implement
    ``activate_impl``, ``infer_impl`` and ``deactivate_impl``. Those that run models
    with the scores inside the graph also set :attr:`output_names` and implement
    ``infer_outputs_impl``.
    """

    #: registry name, e.g. "onnxruntime-cpu"
    name: str = ""
    model_info: ModelInfo
    input_meta: TensorMeta
    output_meta: TensorMeta
    source: str
    #: the model's outputs, in order
    output_names: tuple[str, ...] = (OUTPUT_NAME,)

    def __init__(self) -> None:
        self._active = False

    @property
    def is_active(self) -> bool:
        return self._active

    @property
    def scores_in_graph(self) -> bool:
        """Whether the model computes z and the heat map itself (``ModelInfo.scoring``)."""
        return self.model_info.scoring is not None

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
        Returns ``probs``: ``[N, K, H, W]`` float32 in [0, 1]. A model with the scores
        inside its graph answers here only if it keeps ``probs`` (merged with the
        mirrors' when its graph double-evaluates); see :meth:`infer_scores`.
        """
        self._check_images(images)
        images = np.ascontiguousarray(images)
        if self.scores_in_graph:
            if OUTPUT_NAME not in self.output_names:
                raise ModelError(
                    f"{self.source}: this model computes its scores in the graph and outputs "
                    f"{list(self.output_names)}, not {OUTPUT_NAME!r}; use infer_scores() (or "
                    "export it with --keep-probs)"
                )
            probs = self.infer_outputs_impl(images)[OUTPUT_NAME]
        else:
            probs = self.infer_impl(images)
        n, _, h, w = images.shape
        expected = (n, self.model_info.num_heads, h, w)
        if probs.shape != expected or probs.dtype != np.float32:
            raise ModelError(
                f"{self.source}: output {probs.dtype} {probs.shape} breaks the model contract "
                f"(expected float32 {expected})"
            )
        return probs

    def infer_with_difficulty(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run a model with the learned difficulty head (``ModelInfo.difficulty``).

        ``images``: ``[N, 3, H, W]`` float32, normalised as :attr:`model_info` says.
        Returns ``probs [N, K, H, W]`` and ``difficulty [N, 1, H, W]``, float32 in
        [0, 1]. A model without the head raises :class:`ModelError`.
        """
        if not self.model_info.difficulty:
            raise ModelError(
                f"{self.source}: this model has no {DIFFICULTY_NAME!r} output (no learned "
                "difficulty head; train with [detector] difficulty_head = true and export again)"
            )
        self._check_images(images)
        outputs = self.infer_outputs_impl(np.ascontiguousarray(images))
        problem = self._difficulty_problem(images.shape, outputs)
        if problem:
            raise ModelError(f"{self.source}: {problem}")
        return outputs[OUTPUT_NAME], outputs[DIFFICULTY_NAME]

    def _difficulty_problem(
        self, shape: tuple[int, ...], outputs: dict[str, np.ndarray]
    ) -> str | None:
        """How a difficulty model's outputs for an input of ``shape`` break the contract."""
        n, _, h, w = shape
        expected = {
            OUTPUT_NAME: (n, self.model_info.num_heads, h, w),
            DIFFICULTY_NAME: (n, 1, h, w),
        }
        for name, want in expected.items():
            array = outputs.get(name)
            if array is None:
                return f"the model returned no {name!r} output"
            if array.shape != want or array.dtype != np.float32:
                return (
                    f"output {name} {array.dtype} {array.shape} breaks the model contract "
                    f"(expected float32 {want})"
                )
        return None

    def infer_scores(self, images: np.ndarray) -> GraphScores:
        """Run a model with the scores inside its graph.

        ``images``: ``[N, 3, H, W]`` float32, normalised as :attr:`model_info` says.
        Returns its ``z [N]``, ``heatmap [N, ceil(H/s), ceil(W/s)]`` and, if kept,
        ``probs [N, K, H, W]`` (:class:`GraphScores`).
        """
        if not self.scores_in_graph:
            raise ModelError(
                f"{self.source}: this model outputs probabilities only; score them with "
                "alscout.runtime.scoring (or export it with --scores-in-graph)"
            )
        self._check_images(images)
        outputs = self.infer_outputs_impl(np.ascontiguousarray(images))
        scores = GraphScores(
            z=outputs[Z_NAME], heatmap=outputs[HEATMAP_NAME], probs=outputs.get(OUTPUT_NAME)
        )
        problem = self._scores_problem(images.shape, scores)
        if problem:
            raise ModelError(f"{self.source}: {problem}")
        return scores

    def _check_images(self, images: np.ndarray) -> None:
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

    def _scores_problem(self, shape: tuple[int, ...], scores: GraphScores) -> str | None:
        """How the outputs for an input of ``shape`` break the contract, or None."""
        n, _, h, w = shape
        assert self.model_info.scoring is not None
        s = self.model_info.scoring.heatmap_stride
        expected = {
            Z_NAME: (n,),
            HEATMAP_NAME: (n, math.ceil(h / s), math.ceil(w / s)),
            OUTPUT_NAME: (n, self.model_info.num_heads, h, w),
        }
        found = {Z_NAME: scores.z, HEATMAP_NAME: scores.heatmap, OUTPUT_NAME: scores.probs}
        for name, array in found.items():
            if array is None:
                continue
            if array.shape != expected[name] or array.dtype != np.float32:
                return (
                    f"output {name} {array.dtype} {array.shape} breaks the model contract "
                    f"(expected float32 {expected[name]})"
                )
        return None

    def _probe(self) -> None:
        shape = self.probe_shape()
        images = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        try:
            if self.scores_in_graph or self.model_info.difficulty:
                outputs = self.infer_outputs_impl(images)
            else:
                outputs = {OUTPUT_NAME: self.infer_impl(images)}
        except (ModelError, BackendUnavailableError):
            raise
        except Exception as error:  # backend libraries raise their own error types
            raise ModelError(
                f"{self.source}: probe inference on {shape} failed: {error}"
            ) from error
        if self.scores_in_graph:
            self._probe_scores(shape, outputs)
            return
        if self.model_info.difficulty:
            problem = self._difficulty_problem(shape, outputs)
            if problem:
                raise ModelError(f"{self.source}: probe inference on {shape}: {problem}")
            difficulty = outputs[DIFFICULTY_NAME]
            if not np.isfinite(difficulty).all() or difficulty.min() < 0 or difficulty.max() > 1:
                raise ModelError(f"{self.source}: the difficulty output is not in [0, 1]")
        probs = outputs[OUTPUT_NAME]
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

    def _probe_scores(self, shape: tuple[int, ...], outputs: dict[str, np.ndarray]) -> None:
        missing = [name for name in self.output_names if name not in outputs]
        if missing:
            raise ModelError(f"{self.source}: the probe inference returned no {missing}")
        scores = GraphScores(
            z=outputs[Z_NAME], heatmap=outputs[HEATMAP_NAME], probs=outputs.get(OUTPUT_NAME)
        )
        problem = self._scores_problem(shape, scores)
        if problem:
            raise ModelError(f"{self.source}: probe inference on {shape}: {problem}")
        if not (np.isfinite(scores.z).all() and np.isfinite(scores.heatmap).all()):
            raise ModelError(f"{self.source}: the probe's z or heat map is not finite")
        probs = scores.probs
        if probs is not None and (
            not np.isfinite(probs).all() or probs.min() < 0.0 or probs.max() > 1.0
        ):
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

    def infer_outputs_impl(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``images [N, 3, H, W]`` float32 C-contiguous -> every output, by name.

        Backends that run models with the scores inside the graph, or with the
        difficulty output, override this.
        """
        raise BackendUnavailableError(
            f"backend {self.name} cannot run models with the scores inside the graph or with "
            f"a difficulty output ({self.source}); use an onnxruntime backend"
        )


def check_io_contract(
    source: str | Path, info: ModelInfo, inputs: list[TensorMeta], outputs: list[TensorMeta]
) -> tuple[TensorMeta, TensorMeta]:
    """Check a model's inputs and outputs against SPEC §4; return (input, first output) meta.

    A plain model has one output ``probs [N, K, H, W]``, then ``difficulty
    [N, 1, H, W]`` when ``info.difficulty``; one with the scores inside its graph
    (``info.scoring``) has ``z [N]`` and ``heatmap [N, h, w]``, then ``probs`` only if
    kept. Raises :class:`ModelError` naming ``source`` and the first mismatch.
    """
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        names = [t.name for t in inputs]
        raise ModelError(
            f"{source}: model inputs are {names}; the contract needs one {INPUT_NAME!r}"
        )
    names = [t.name for t in outputs]
    if info.scoring is None and info.difficulty:
        if names != [OUTPUT_NAME, DIFFICULTY_NAME]:
            raise ModelError(
                f"{source}: model outputs are {names}; a model with the difficulty head (its "
                f"metadata says so) needs {[OUTPUT_NAME, DIFFICULTY_NAME]}"
            )
    elif info.scoring is None:
        if names != [OUTPUT_NAME]:
            raise ModelError(
                f"{source}: model outputs are {names}; the contract needs one {OUTPUT_NAME!r}"
            )
    elif names not in ([Z_NAME, HEATMAP_NAME], [Z_NAME, HEATMAP_NAME, OUTPUT_NAME]):
        raise ModelError(
            f"{source}: model outputs are {names}; a model with scores in its graph (its "
            f"metadata says so) needs {[Z_NAME, HEATMAP_NAME]}, then {OUTPUT_NAME!r} if kept"
        )
    ranks = {INPUT_NAME: 4, OUTPUT_NAME: 4, Z_NAME: 1, HEATMAP_NAME: 3, DIFFICULTY_NAME: 4}
    image = inputs[0]
    for meta in (image, *outputs):
        if meta.dtype != "float32":
            raise ModelError(f"{source}: {meta.name} is {meta.dtype}; the contract needs float32")
        if len(meta.shape) != ranks[meta.name]:
            raise ModelError(
                f"{source}: {meta.name} has rank {len(meta.shape)}, contract needs "
                f"{ranks[meta.name]}"
            )
    if image.shape[1] not in (None, 3):
        raise ModelError(f"{source}: {INPUT_NAME} has {image.shape[1]} channels, contract needs 3")
    k = info.num_heads
    for probs in (meta for meta in outputs if meta.name == OUTPUT_NAME):
        if probs.shape[1] is not None and probs.shape[1] != k:
            raise ModelError(
                f"{source}: {OUTPUT_NAME} has K={probs.shape[1]} channels but metadata says K={k}"
            )
    for difficulty in (meta for meta in outputs if meta.name == DIFFICULTY_NAME):
        if difficulty.shape[1] not in (None, 1):
            raise ModelError(
                f"{source}: {DIFFICULTY_NAME} has {difficulty.shape[1]} channels, contract needs 1"
            )
    return image, outputs[0]
