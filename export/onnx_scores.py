"""Models with the scores inside their graph (SPEC §4, ``alscout export onnx --scores-in-graph``).

``ScoredOnnxFromOnnx(plain, scoring)`` takes a model that follows the plain contract
(``images -> probs``) and returns one graph ``images -> z, heatmap`` (and ``probs``
with ``keep_probs``): the mirror step (:class:`~alscout.export.scores_graph.MirrorBatch`)
in front of the detector's own graph, untouched, and the score head
(:class:`~alscout.export.scores_graph.ScoreHead`) behind it. Both are traced from the
torch modules that also run in PyTorch, at the detector's opset, and joined to it with
``onnx.compose``. Any contract model can be scored this way, whatever produced it:
``OnnxFromTorch(detector)`` for a checkpoint, or a file from elsewhere.

Only ``z [N]`` and ``heatmap [N, ceil(H/s), ceil(W/s)]`` (s = 16 by default) leave
the graph: ~1.2 KB per 640x480 frame instead of the 2 x K x H x W probabilities.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import replace
from typing import Any

from alscout.errors import ModelError
from alscout.export.loaders import Loader, resolve
from alscout.export.onnx import check_onnx
from alscout.runtime.model_info import (
    HEATMAP_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    Z_NAME,
    GraphScoring,
)

__all__ = ["ScoredOnnxFromOnnx", "scored_output_names"]

log = logging.getLogger(__name__)

#: names inside the joined graph before the outer ones are restored
_MIRROR, _DETECTOR, _HEAD = "mirror/", "detector/", "scores/"
_BATCH = "batch"  # the mirror step's output: frames then mirrors
_RAW = "raw_probs"  # the score head's input: the detector's probabilities
#: smallest opset the score head is traced at (AveragePool count_include_pad, MaxPool
#: ceil_mode, Slice with steps, ReduceSum with axes as an input)
_MIN_OPSET = 13
#: side of the example maps the score modules are traced on; the graph is shape-generic
_TRACE_SIDE = 40


def scored_output_names(keep_probs: bool) -> tuple[str, ...]:
    """The outputs of a model with the scores inside its graph, in order."""
    return (Z_NAME, HEATMAP_NAME, OUTPUT_NAME) if keep_probs else (Z_NAME, HEATMAP_NAME)


class ScoredOnnxFromOnnx(Loader[Any]):
    """A plain contract model ``images -> probs`` with the scores of SPEC §1 inside it.

    ``model``: an ``onnx.ModelProto`` following SPEC §4 (or a loader of one, e.g.
    ``OnnxFromTorch(detector, info)``). ``scoring``: radius, region, method,
    aggregation, double evaluation and heat-map stride; they are written into the
    metadata (``alscout.scores.*``), which the runtime checks against its own
    settings. ``keep_probs`` adds the (merged) probabilities as a third output.
    """

    def __init__(self, model: Any, scoring: GraphScoring, *, keep_probs: bool = False) -> None:
        self.model = model
        self.scoring = scoring
        self.keep_probs = keep_probs

    def call_impl(self) -> Any:
        import onnx
        from onnx import compose

        from alscout.export.scores_graph import MirrorBatch, ScoreHead

        plain = resolve(self.model)
        info = check_onnx(plain, source="the plain model")
        if info.scoring is not None:
            raise ModelError("the model already has scores in its graph; start from a plain one")
        opset = _default_opset(plain)
        if opset < _MIN_OPSET:
            raise ModelError(
                f"the plain model uses opset {opset}; scores in the graph need >= {_MIN_OPSET} "
                "(re-export it with --opset 17)"
            )
        k = info.num_heads
        per_frame = 2 if self.scoring.double_evaluation else 1  # images the detector sees
        outputs = scored_output_names(self.keep_probs)
        head = _trace(
            ScoreHead(self.scoring, self.keep_probs),
            (2 * per_frame, k, _TRACE_SIDE, _TRACE_SIDE),
            _RAW,
            outputs,
            {
                _RAW: {0: "B", 2: "H", 3: "W"},
                Z_NAME: {0: "N"},
                HEATMAP_NAME: {0: "N", 1: "heatmap_height", 2: "heatmap_width"},
                OUTPUT_NAME: {0: "N", 2: "H", 3: "W"},
            },
            opset,
        )
        detector = onnx.ModelProto()
        detector.CopyFrom(plain)
        del detector.metadata_props[:]
        if self.scoring.double_evaluation:
            # The detector sees the frames and their mirrors: its batch axis is 2N, which
            # must not share the input's name (runtimes plan buffers by these names).
            _rename_dim(detector.graph, "N", "B")
        parts = [detector, head]
        if self.scoring.double_evaluation:
            mirror = _trace(
                MirrorBatch(),
                (2, 3, _TRACE_SIDE, _TRACE_SIDE),
                INPUT_NAME,
                (_BATCH,),
                {INPUT_NAME: {0: "N", 2: "H", 3: "W"}, _BATCH: {0: "B", 2: "H", 3: "W"}},
                opset,
            )
            parts.insert(0, mirror)
        ir_version = max(part.ir_version for part in parts)
        for part in parts:
            part.ir_version = ir_version
        joined = compose.merge_models(
            detector,
            head,
            io_map=[(OUTPUT_NAME, _RAW)],
            prefix1=_DETECTOR,
            prefix2=_HEAD,
        )
        inner_input = _DETECTOR + INPUT_NAME
        if self.scoring.double_evaluation:
            joined = compose.merge_models(
                parts[0], joined, io_map=[(_BATCH, inner_input)], prefix1=_MIRROR
            )
            inner_input = _MIRROR + INPUT_NAME
        _rename(joined.graph, inner_input, INPUT_NAME)
        for name in outputs:
            _rename(joined.graph, _HEAD + name, name)
        _name_output_dims(joined, k)
        scored_info = replace(info, scoring=self.scoring)
        del joined.metadata_props[:]
        onnx.helper.set_model_props(joined, scored_info.to_metadata())
        joined.producer_name = "alscout"
        joined.graph.name = f"{plain.graph.name or 'detector'}_scored"
        joined.doc_string = (
            f"{info.name} {info.version}: pedestrian head probabilities scored inside the "
            f"graph (SPEC §1: {self.scoring.method}, radius {self.scoring.radius}, region "
            f"{self.scoring.region}, double evaluation "
            f"{'on' if self.scoring.double_evaluation else 'off'})"
        )
        check_onnx(joined, source=f"scores in the graph of {info.name} {info.version}")
        log.info(
            "scores added to the graph model=%s version=%s method=%s radius=%d region=%d "
            "double=%s keep_probs=%s",
            info.name,
            info.version,
            self.scoring.method,
            self.scoring.radius,
            self.scoring.region,
            self.scoring.double_evaluation,
            self.keep_probs,
        )
        return joined


def _trace(
    module: Any,
    example_shape: tuple[int, ...],
    input_name: str,
    output_names: tuple[str, ...],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
) -> Any:
    """Trace ``module`` on uniform values in [0, 1) of ``example_shape`` to ONNX."""
    import onnx
    import torch

    example = torch.rand(example_shape, generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # As in OnnxFromTorch: the TorchScript exporter's deprecation and tracer notes;
        # the joined model is checked and verified numerically instead.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module.eval(),
            (example,),
            buffer,  # type: ignore[arg-type]  # a file object works with dynamo=False
            input_names=[input_name],
            output_names=list(output_names),
            opset_version=opset,
            dynamo=False,
            dynamic_axes={
                k: v for k, v in dynamic_axes.items() if k in (input_name, *output_names)
            },
            do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())


def _default_opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ModelError("the plain model imports no default-domain opset")


def _rename(graph: Any, old: str, new: str) -> None:
    """Rename the value ``old`` to ``new`` everywhere in ``graph`` (top level)."""
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new


def _rename_dim(graph: Any, old: str, new: str) -> None:
    """Rename the symbolic dimension ``old`` to ``new`` in every shape ``graph`` declares."""
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == old:
                dim.dim_param = new


def _name_output_dims(model: Any, k: int) -> None:
    """Outputs' batch axis "N" like the input's; ``probs`` keeps K fixed and H, W named."""
    for value in model.graph.output:
        dims = value.type.tensor_type.shape.dim
        dims[0].dim_param = "N"
        if value.name == OUTPUT_NAME:
            dims[1].Clear()
            dims[1].dim_value = k
            dims[2].dim_param, dims[3].dim_param = "H", "W"
