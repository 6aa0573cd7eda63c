"""Inference cost counted from the ONNX graph, the way the pruning literature counts it.

Conv, Gemm and MatMul-with-weights (and their INT8 forms, QLinearConv and QLinearMatMul)
cost one multiply-add (MAC) per weight per output position; the sparse count keeps only
the non-zero weights, since a sparse engine skips the rest. Every other op is counted dense, one operation per output element (pooling:
per window element). Counts are per image. FLOPs are reported as 2 x MACs, as in the
CVPR 2023 paper's Table 1 (dense resnet18 at 224x224: 1.82 GMACs, 3.64 GFLOPs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.errors import SparsebiasError

SPARSITY_TOLERANCE = 1e-4   # a manifest's figures are rounded by JSON only
WEIGHTED_OPS = {"Conv": 1, "Gemm": 1, "MatMul": 1, "QLinearConv": 3, "QLinearMatMul": 3}   # op -> weight input
ELEMENTWISE_CONTRIB_OPS = ("QLinearAdd", "QLinearMul")   # com.microsoft ops ONNX shape inference does not know
FREE_OPS = {"Reshape", "Flatten", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Constant",
            "Identity", "Transpose", "Cast", "Dropout"}


@dataclass
class LayerCost:
    name: str
    op: str
    dense_macs: int
    sparse_macs: int
    weight_sparsity: float


@dataclass
class FlopReport:
    layers: list[LayerCost] = field(default_factory=list)
    other_ops: int = 0          # operations outside Conv/Gemm/MatMul, always dense
    weights: int = 0            # weights of Conv/Gemm/MatMul
    zero_weights: int = 0

    @property
    def dense_macs(self) -> int:
        return sum(layer.dense_macs for layer in self.layers) + self.other_ops

    @property
    def sparse_macs(self) -> int:
        return sum(layer.sparse_macs for layer in self.layers) + self.other_ops

    @property
    def weight_sparsity(self) -> float:
        return self.zero_weights / self.weights if self.weights else 0.0

    def to_dict(self, per_layer: bool = True) -> dict:
        out = {"dense_macs": self.dense_macs, "sparse_macs": self.sparse_macs,
               "dense_flops": 2 * self.dense_macs, "sparse_flops": 2 * self.sparse_macs,
               "reduction": self.dense_macs / self.sparse_macs, "other_ops": self.other_ops,
               "weight_sparsity": self.weight_sparsity,
               "convention": "per image; MACs of Conv/Gemm/MatMul scaled by non-zero weights, "
                             "other ops dense; FLOPs = 2 x MACs"}
        if per_layer:
            out["per_layer"] = [vars(layer) for layer in self.layers]
        return out


def count_flops(model) -> FlopReport:
    """Count one image's cost through an onnx.ModelProto (or a path to one)."""
    import onnx
    from onnx import numpy_helper

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    graph = _inferred(_with_batch_one(model)).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*graph.input, *graph.value_info, *graph.output)}
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # Constant nodes hold weights too in some exports, QDQ graphs dequantize them,
        # and torch's exporter shares equal weights (two emptied layers) through an Identity
        if node.op_type == "Constant" and node.attribute and node.attribute[0].t.dims:
            weights[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type in ("DequantizeLinear", "Identity") and node.input[0] in weights:
            weights[node.output[0]] = weights[node.input[0]]

    report = FlopReport()
    for node in graph.node:
        out_shape = shapes.get(node.output[0])
        weight = _weight_of(node, weights)
        if weight is not None and out_shape:
            per_weight_uses = _weight_uses(node, weight, out_shape)
            nonzero = int(np.count_nonzero(weight))
            report.layers.append(LayerCost(node.name or node.output[0], node.op_type, per_weight_uses * weight.size,
                                           per_weight_uses * nonzero, 1 - nonzero / weight.size))
            report.weights += weight.size
            report.zero_weights += weight.size - nonzero
        elif node.op_type not in FREE_OPS and out_shape and node.output[0] not in weights:   # not a weight's DQ
            report.other_ops += _other_op_cost(node, out_shape, shapes)
    return report


def _inferred(model):
    """Shape inference, carried through com.microsoft's element-wise ops (INT8 graphs): their
    output takes their first input's shape, and inference runs again from there."""
    import onnx
    from onnx import shape_inference

    while True:
        inferred = shape_inference.infer_shapes(model)
        known = {v.name: v for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)}
        added = False
        for node in inferred.graph.node:
            if node.op_type in ELEMENTWISE_CONTRIB_OPS and node.output[0] not in known and node.input[0] in known:
                info = onnx.ValueInfoProto()
                info.CopyFrom(known[node.input[0]])
                info.name = node.output[0]
                model.graph.value_info.append(info)
                added = True
        if not added:
            return inferred


def _with_batch_one(model):
    """A copy whose graph input has batch 1, so shape inference gives concrete sizes."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name not in initializers and value.type.tensor_type.shape.dim:
            value.type.tensor_type.shape.dim[0].dim_value = 1
    return model


def _weight_of(node, weights):
    index = WEIGHTED_OPS.get(node.op_type)
    if index is None or len(node.input) <= index:
        return None
    return weights.get(node.input[index])


def _weight_uses(node, weight, out_shape) -> int:
    """How many times each weight is multiplied per image."""
    if node.op_type in ("Conv", "QLinearConv"):
        return int(np.prod(out_shape[2:]))          # once per output position
    return int(np.prod(out_shape[1:-1])) if len(out_shape) > 2 else 1  # Gemm/MatMul: once per row


def _other_op_cost(node, out_shape, shapes) -> int:
    elements = int(np.prod(out_shape[1:]))
    if node.op_type in ("MaxPool", "AveragePool"):
        kernel = next(a.ints for a in node.attribute if a.name == "kernel_shape")
        return elements * int(np.prod(kernel))
    if node.op_type in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean"):
        return int(np.prod(shapes[node.input[0]][1:]))
    return elements


def check_claimed_sparsity(bundle) -> None:
    """model.onnx must be as sparse as the manifest says, in its cost figures and in its layers: a
    swapped model or an edited claim is caught before any image is run."""
    measured = count_flops(bundle.file("model.onnx"))
    claimed = bundle.manifest.get("flops", {}).get("weight_sparsity")
    if claimed is not None and abs(measured.weight_sparsity - float(claimed)) > SPARSITY_TOLERANCE:
        raise SparsebiasError(f"{bundle.path}: model.onnx has {measured.weight_sparsity:.2%} zero weights, the "
                              f"manifest says {float(claimed):.2%}")
    problem = sparsity_mismatch(measured, bundle.manifest.sparsity, bundle.manifest.layer_sparsity,
                                quantized="quantization" in bundle.manifest)
    if problem:
        raise SparsebiasError(f"{bundle.path}: {problem}")


def sparsity_mismatch(measured: FlopReport, overall: float, per_layer: dict[str, float],
                      quantized: bool = False) -> str | None:
    """How a graph's weights differ from a model's sparsity (`overall`, `per_layer`), or None.
    An INT8 graph keeps its FP32 parent's zeros, and rounding can only add to them."""
    if measured.weight_sparsity < overall - SPARSITY_TOLERANCE or (
            not quantized and abs(measured.weight_sparsity - overall) > SPARSITY_TOLERANCE):
        return f"model.onnx has {measured.weight_sparsity:.2%} zero weights, the manifest says {overall:.2%}"
    if quantized:
        return None
    layers = sorted(layer.weight_sparsity for layer in measured.layers)
    claims = sorted(per_layer.values())
    if len(claims) != len(layers):
        return f"model.onnx has {len(layers)} layers with weights, the manifest's sparsity lists {len(claims)}"
    for has, says in zip(layers, claims):
        if abs(has - says) > SPARSITY_TOLERANCE:
            return (f"the manifest's sparsity per layer is not model.onnx's: it lists {says:.4%} where the graph "
                    f"has {has:.4%} (layers in order of sparsity)")
    return None
