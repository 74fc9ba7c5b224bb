"""Weights read from the initialisers of an exported ONNX graph (the ``onnx`` library does the parsing).

PyTorch's ONNX exporter keeps parameter names for biases, norms and embeddings, but the weight of every
``nn.Linear`` becomes an anonymous, transposed ``onnx::MatMul_<n>`` initialiser. Its owner is recovered from
the graph: the ``MatMul`` node that reads it feeds an ``Add`` whose other input is the named bias of the same
Linear (``<module>.bias``), so that weight is ``<module>.weight`` (stored ``[in, out]``, transposed back here).
This does not depend on node order: in the DINOv2 export, for instance, key comes before value and query.
Any other anonymous initialiser is returned under its ONNX name for the family to place (DINOv2's constant-
folded position-table pieces); the family's strict load then accounts for every tensor.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from peft3d.backbones.checkpoints import first_line
from peft3d.core.errors import WeightsError


def load_graph(name: str, path: Path):
    """The ONNX model at ``path`` (weights inline); any failure to parse is one WeightsError."""
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as e:  # noqa: BLE001  (truncated / corrupt protobuf)
        raise WeightsError(f"{name}: cannot read ONNX file {path}: {first_line(e)}; fix: reinstall the package "
                           "that ships it") from None


def initialisers(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def named_weights(name: str, path: Path, strip: str = "") -> dict[str, np.ndarray]:
    """Every initialiser of the graph at ``path``, anonymous Linear weights renamed after their bias
    (transposed to ``[out, in]``), and ``strip`` removed from the front of every name."""
    model = load_graph(name, path)
    arrays = initialisers(model)
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    out: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2 or node.input[1] not in arrays:
            continue
        anon = node.input[1]
        if not anon.startswith("onnx::"):
            continue  # already named
        bias = _bias_of(consumers.get(node.output[0], []), node.output[0], arrays)
        if bias is None:
            raise WeightsError(f"{name}: {path}: cannot tell which layer the matrix {anon} belongs to "
                               "(its MatMul is not followed by a named bias Add)")
        target = bias[: -len(".bias")] + ".weight"
        if target in out:
            raise WeightsError(f"{name}: {path}: two matrices claim {target}")
        out[target] = np.ascontiguousarray(arrays.pop(anon).T)
    out.update(arrays)
    return {(k[len(strip):] if strip and k.startswith(strip) else k): v for k, v in out.items()}


def _bias_of(nodes: list, produced: str, arrays: dict[str, np.ndarray]) -> str | None:
    for n in nodes:
        if n.op_type == "Add":
            other = [i for i in n.input if i != produced]
            if len(other) == 1 and other[0] in arrays and other[0].endswith(".bias"):
                return other[0]
    return None
