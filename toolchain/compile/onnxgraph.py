"""What an ONNX graph contains, as the int8 recipes need to know it (pure: a ModelProto in, values out).

- :func:`profile`: weight parameters behind convolutions vs matrix products, and whether the
  graph has attention (a ``Softmax`` fed by a ``MatMul`` whose result feeds another ``MatMul``);
- :func:`int8_recipe`: static QDQ for convolution nets, dynamic per-channel for transformer and
  linear-heavy graphs, with the reason in words (the manifest's ``recipe.chosen_because``);
- :func:`with_outputs`: a copy of a model that also outputs the given intermediate tensors
  (how the accuracy-aware loop reads per-layer activations).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

_CONV = {"Conv", "ConvTranspose"}
_MATMUL = {"MatMul", "Gemm"}


@dataclass(frozen=True)
class GraphProfile:
    conv_params: int
    matmul_params: int
    attention: bool
    ops: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"conv_params": self.conv_params, "matmul_params": self.matmul_params, "attention": self.attention}


def profile(model: Any) -> GraphProfile:
    """Parameters feeding conv and matmul/gemm nodes, and attention blocks, of ``model.graph``."""
    sizes = {t.name: int(np.prod(t.dims)) if len(t.dims) else 1 for t in model.graph.initializer}
    # weights reached through a DequantizeLinear/Transpose/Cast still count for their node
    producer = {o: n for n in model.graph.node for o in n.output}
    conv = mm = 0
    for n in model.graph.node:
        if n.op_type in _CONV | _MATMUL:
            p = sum(_weight_size(i, sizes, producer) for i in n.input[1:2])
            if n.op_type in _CONV:
                conv += p
            else:
                mm += p
    return GraphProfile(conv_params=conv, matmul_params=mm, attention=has_attention(model),
                        ops=dict(Counter(n.op_type for n in model.graph.node)))


def _weight_size(name: str, sizes: dict[str, int], producer: dict[str, Any], depth: int = 0) -> int:
    if name in sizes:
        return sizes[name]
    node = producer.get(name)
    if node is None or depth > 3 or node.op_type not in ("DequantizeLinear", "Transpose", "Cast", "Identity"):
        return 0
    return _weight_size(node.input[0], sizes, producer, depth + 1)


def has_attention(model: Any) -> bool:
    """A Softmax between two MatMuls (scores = Q.K^T -> softmax -> .V), within a few hops."""
    consumers: dict[str, list[Any]] = {}
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for sm in (n for n in model.graph.node if n.op_type == "Softmax"):
        if _reaches(sm.input[0], producer, "MatMul", up=True) and _reaches_down(sm.output[0], consumers, "MatMul"):
            return True
    return False


def _reaches(tensor: str, producer: dict[str, Any], op: str, *, up: bool, hops: int = 4) -> bool:
    node = producer.get(tensor)
    for _ in range(hops):
        if node is None:
            return False
        if node.op_type == op:
            return True
        node = producer.get(node.input[0]) if node.input else None
    return False


def _reaches_down(tensor: str, consumers: dict[str, list[Any]], op: str, hops: int = 4) -> bool:
    frontier = [tensor]
    for _ in range(hops):
        nxt = []
        for t in frontier:
            for n in consumers.get(t, ()):
                if n.op_type == op:
                    return True
                nxt.extend(n.output)
        frontier = nxt
    return False


def int8_recipe(p: GraphProfile) -> tuple[str, str]:
    """``("static" | "dynamic", reason)``: the ORT int8 recipe that fits the graph.

    Attention -> dynamic (activation ranges differ per input); convolutions -> static QDQ (a
    conv net with a dense head is still a conv net: MTCNN's O-Net holds most weights in its
    dense layer); only matrix products -> dynamic.
    """
    if p.attention:
        return "dynamic", "the graph has attention (MatMul -> Softmax -> MatMul): dynamic per-channel keeps its activation ranges per input"
    if p.conv_params > 0:
        return "static", f"a convolution net ({p.conv_params:,} conv weights, {p.matmul_params:,} in dense layers): static QDQ"
    return "dynamic", f"only matrix products ({p.matmul_params:,} weights) and no convolution: dynamic per-channel"


def with_outputs(model: Any, names: Iterable[str]) -> Any:
    """A copy of ``model`` whose graph also outputs ``names`` (untyped: ORT infers them)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
            have.add(n)
    return m


def tensor_names(model: Any) -> set[str]:
    return {o for n in model.graph.node for o in n.output}
