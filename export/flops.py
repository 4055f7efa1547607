"""Exact multiply-add count of an ONNX model at one input shape, read from its graph.

The input's dynamic axes are fixed to ``[N, 3, H, W]`` and ONNX shape inference (with
data propagation, so sizes computed by ``Shape``/``Concat`` reach ``Resize``) gives
every tensor's shape; the multiply-adds of each ``Conv``, ``ConvTranspose``, ``Gemm``
and ``MatMul`` follow from its input, weight and output shapes. Everything else
(normalisation, activations, pooling, resizing, quantise/dequantise) is left out: those
are memory-bound and are not what a CPU's multiply-add peak measures. A QDQ model
counts the same as its float32 source (its weights reach the convolutions through
``DequantizeLinear``, whose output has the weight's shape).

Per frame with double evaluation = the count at N = 2 (the frame and its mirror run
in one batch). One multiply-add is two floating-point (or integer) operations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alscout.errors import ModelError
from alscout.runtime.model_info import INPUT_NAME

__all__ = ["MacCount", "count_macs", "COUNTED_OPS"]

log = logging.getLogger(__name__)

#: the operators whose multiply-adds are counted
COUNTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class MacCount:
    """Multiply-adds of one run of a model on an input of ``input_shape`` ``[N, 3, H, W]``.

    ``by_op``: operator type -> multiply-adds; ``nodes``: how many nodes of each
    counted type the graph holds.
    """

    input_shape: tuple[int, int, int, int]
    by_op: Mapping[str, int] = field(default_factory=dict)
    nodes: Mapping[str, int] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        """All multiply-adds of one run."""
        return sum(self.by_op.values())

    @property
    def flops(self) -> int:
        """Operations of one run (2 per multiply-add)."""
        return 2 * self.macs

    def describe(self) -> str:
        """e.g. ``1.234 GMAC at [2, 3, 480, 640] (Conv 63 nodes 1.234 GMAC)``."""
        parts = ", ".join(
            f"{op} {self.nodes.get(op, 0)} nodes {macs / 1e9:.4g} GMAC"
            for op, macs in sorted(self.by_op.items())
        )
        return f"{self.macs / 1e9:.4g} GMAC at {list(self.input_shape)} ({parts})"


def count_macs(model: Any, input_shape: tuple[int, int, int, int]) -> MacCount:
    """Multiply-adds of ``model`` (an ``onnx.ModelProto`` or a path) on ``input_shape``.

    ``input_shape``: ``[N, 3, H, W]`` given to the input ``images``. Raises
    :class:`ModelError` when a counted node's shapes cannot be inferred.
    """
    import onnx

    if isinstance(model, str | Path):
        model = onnx.load(str(model))
    if len(input_shape) != 4 or min(input_shape) < 1:
        raise ModelError(f"input_shape must be [N, 3, H, W] >= 1, got {input_shape}")
    shapes = _inferred_shapes(model, input_shape)
    by_op: dict[str, int] = {}
    nodes: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        macs = _node_macs(node, shapes)
        by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
        nodes[node.op_type] = nodes.get(node.op_type, 0) + 1
    n, c, h, w = (int(v) for v in input_shape)
    count = MacCount((n, c, h, w), by_op, nodes)
    log.debug("multiply-adds %s", count.describe())
    return count


def _inferred_shapes(model: Any, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> static shape (dims that stayed unknown are 0)."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    graph_inputs = [v for v in fixed.graph.input if v.name == INPUT_NAME]
    if not graph_inputs:
        raise ModelError(f"the model has no input {INPUT_NAME!r} to fix the shape of")
    dims = graph_inputs[0].type.tensor_type.shape.dim
    if len(dims) != len(input_shape):
        raise ModelError(f"input {INPUT_NAME!r} has rank {len(dims)}, not {len(input_shape)}")
    for dim, size in zip(dims, input_shape, strict=True):
        dim.Clear()
        dim.dim_value = int(size)
    # stale symbolic shapes from the export would conflict with the fixed ones
    del fixed.graph.value_info[:]
    for output in fixed.graph.output:
        for dim in output.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.Clear()
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as error:
        raise ModelError(f"shape inference at {list(input_shape)} failed: {error}") from error
    shapes: dict[str, tuple[int, ...]] = {}
    graph = inferred.graph
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            shapes[value.name] = tuple(
                d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim
            )
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    for node in graph.node:  # Constant nodes carry their tensor in an attribute
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = tuple(attr.t.dims)
    return shapes


def _shape(shapes: Mapping[str, tuple[int, ...]], node: Any, name: str) -> tuple[int, ...]:
    shape = shapes.get(name)
    if shape is None or not shape or min(shape) < 1:
        raise ModelError(
            f"{node.op_type} node {node.name or '<unnamed>'}: the shape of {name!r} is not "
            f"known at this input size (inferred {shape})"
        )
    return shape


def _attribute(node: Any, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


def _node_macs(node: Any, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Multiply-adds of one Conv, ConvTranspose, Gemm or MatMul node."""
    if node.op_type == "Conv":
        # every output element sums (C_in / groups) x kernel products
        out = _shape(shapes, node, node.output[0])
        weight = _shape(shapes, node, node.input[1])
        return math.prod(out) * math.prod(weight[1:])
    if node.op_type == "ConvTranspose":
        # every input element scatters into (C_out / groups) x kernel outputs
        x = _shape(shapes, node, node.input[0])
        weight = _shape(shapes, node, node.input[1])
        return math.prod(x) * math.prod(weight[1:])
    if node.op_type == "Gemm":
        a = _shape(shapes, node, node.input[0])
        b = _shape(shapes, node, node.input[1])
        m, k = (a[1], a[0]) if _attribute(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attribute(node, "transB", 0) else b[1]
        return m * k * n
    # MatMul: numpy semantics; the output holds every (batch, m, n) sum of k products
    a = _shape(shapes, node, node.input[0])
    out = _shape(shapes, node, node.output[0])
    return math.prod(out) * a[-1]
