"""An FP32 ONNX classifier rewritten as an INT8 QOperator graph, the form DeepSparse runs
(or, `qdq_graph`, as the QDQ graph with int8 symmetric activations TensorRT builds from).

Weights: int8, symmetric, one scale per tensor, zero point 0, so a pruned weight stays
exactly zero. Activations: uint8 with a scale and zero point from calibrated ranges; a
range that includes 0 keeps 0 exact, and a ReLU folds into the op before it by
quantizing that op's output with the ReLU's range (zero point 0). Conv becomes
QLinearConv (int32 bias at scale x_scale * w_scale), Add becomes com.microsoft's
QLinearAdd; everything else (pooling, the classifier) stays in float behind a
DequantizeLinear, as DeepSparse 1.8 wants it (shared ENVIRONMENT.md): MaxPool keeps its
input's quantization, since the maximum of values on one grid is on that grid. Scales
and zero points are scalars; opset 13.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import SparsebiasError
from ..core.int8 import INT8_MAX, QParams, weight_scale

MS_DOMAIN = "com.microsoft"


def quantize_weight(weight: np.ndarray) -> tuple[np.ndarray, float]:
    scale = weight_scale(weight)
    return np.clip(np.round(weight / np.float32(scale)), -INT8_MAX, INT8_MAX).astype(np.int8), scale


def quantize_graph(model, params: dict[str, QParams]):
    """The INT8 QOperator version of `model` (an onnx.ModelProto in opset 13), given the uint8
    quantization of the graph input and of every float tensor a node produces that it needs
    (from calibrated ranges, or read off a quantization-aware model's QDQ graph)."""
    return _Rewriter(model, params).run()


class _Rewriter:
    def __init__(self, model, params):
        import onnx
        from onnx import numpy_helper

        self.onnx, self.numpy_helper = onnx, numpy_helper
        self.graph = model.graph
        self.params = params
        self.weights = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        self.consumers: dict[str, list] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = {o.name for o in self.graph.output}
        self.nodes, self.initializers = [], []
        self.initializer_names: set[str] = set()
        self.quantized: dict[str, tuple[str, QParams]] = {}   # float tensor -> (its uint8 tensor, params)
        self.floats = {i.name for i in self.graph.input} | set(self.weights)
        self.folded: set[str] = set()                       # ReLUs folded into the op before them

    def run(self):
        helper = self.onnx.helper
        for node in self.graph.node:
            if id(node) in self.folded:
                continue
            if node.op_type == "Conv" and node.input[1] in self.weights:
                self._conv(node)
            elif node.op_type == "Add" and all(x not in self.weights for x in node.input):
                self._add(node)
            elif node.op_type == "MaxPool" and node.input[0] in self.quantized:
                self._maxpool(node)
            else:
                self._float(node)
        for output in self.graph.output:
            self._need_float(output.name)
        used = {name for node in self.nodes for name in node.input}
        kept = [i for i in self.graph.initializer if i.name in used]
        graph = helper.make_graph(self.nodes, self.graph.name, list(self.graph.input), list(self.graph.output),
                                  kept + self.initializers)   # no value info: DeepSparse 1.8 aborts on some
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                        helper.make_opsetid(MS_DOMAIN, 1)],
                                  producer_name="sparsebias")
        model.ir_version = 7
        return model

    # ---------------------------------------------------------------- ops

    def _conv(self, node):
        x, out, params = node.input[0], *self._fused_output(node)
        qx, px = self._need_quantized(x)
        weight, w_scale = quantize_weight(self.weights[node.input[1]])
        inputs = [qx, self._scalar(f"{x}_scale", px.scale), self._zero_point(f"{x}_zp", px.zero_point, np.uint8),
                  self._tensor(f"{node.input[1]}_int8", weight), self._scalar(f"{node.input[1]}_scale", w_scale),
                  self._zero_point(f"{node.input[1]}_zp", 0, np.int8),
                  self._scalar(f"{out}_scale", params.scale),
                  self._zero_point(f"{out}_zp", params.zero_point, np.uint8)]
        if len(node.input) > 2 and node.input[2]:
            bias = self.weights[node.input[2]].astype(np.float64) / (np.float64(px.scale) * np.float64(w_scale))
            inputs.append(self._tensor(f"{node.input[2]}_int32", np.round(bias).astype(np.int32)))
        self._emit("QLinearConv", inputs, out, params, node)

    def _add(self, node):
        out, params = self._fused_output(node)
        inputs = []
        for x in node.input:
            qx, px = self._need_quantized(x)
            inputs += [qx, self._scalar(f"{x}_scale", px.scale), self._zero_point(f"{x}_zp", px.zero_point, np.uint8)]
        inputs += [self._scalar(f"{out}_scale", params.scale),
                   self._zero_point(f"{out}_zp", params.zero_point, np.uint8)]
        self._emit("QLinearAdd", inputs, out, params, node, domain=MS_DOMAIN)

    def _maxpool(self, node):
        """Float max pooling between a dequantize and a quantize with the input's own parameters."""
        self._float(node)
        _, params = self.quantized[node.input[0]]
        self._quantize(node.output[0], params)

    def _float(self, node):
        for x in node.input:
            if x:
                self._need_float(x)
        self.nodes.append(node)
        self.floats.update(node.output)

    # ---------------------------------------------------------------- tensors

    def _fused_output(self, node) -> tuple[str, QParams]:
        """The tensor this op's quantized output stands for: the following ReLU's, when the ReLU is
        its only consumer (folded away), else its own; with that tensor's calibrated parameters."""
        out = node.output[0]
        after = self.consumers.get(out, [])
        if len(after) == 1 and after[0].op_type == "Relu" and out not in self.graph_outputs:
            self.folded.add(id(after[0]))
            out = after[0].output[0]
        return out, self._params(out)

    def _params(self, name) -> QParams:
        if name not in self.params:
            raise SparsebiasError(f"cannot quantize tensor {name!r}: no range was observed for it")
        return self.params[name]

    def _need_quantized(self, name) -> tuple[str, QParams]:
        if name not in self.quantized:
            self._need_float(name)
            self._quantize(name, self._params(name))
        return self.quantized[name]

    def _quantize(self, name, params: QParams):
        q = f"{name}_quantized"
        self.nodes.append(self.onnx.helper.make_node(
            "QuantizeLinear", [name, self._scalar(f"{name}_scale", params.scale),
                               self._zero_point(f"{name}_zp", params.zero_point, np.uint8)], [q],
            name=f"{name}_QuantizeLinear"))
        self.quantized[name] = (q, params)

    def _need_float(self, name):
        if name in self.floats:
            return
        q, params = self.quantized[name]
        self.nodes.append(self.onnx.helper.make_node(
            "DequantizeLinear", [q, self._scalar(f"{name}_scale", params.scale),
                                 self._zero_point(f"{name}_zp", params.zero_point, np.uint8)], [name],
            name=f"{name}_DequantizeLinear"))
        self.floats.add(name)

    def _emit(self, op, inputs, out, params, node, domain=""):
        q = f"{out}_quantized"
        attributes = {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [q], name=f"{node.name or out}_quant",
                                                     domain=domain or None, **attributes))
        self.quantized[out] = (q, params)

    def _scalar(self, name, value) -> str:
        return self._tensor(name, np.array(value, dtype=np.float32))

    def _zero_point(self, name, value, dtype) -> str:
        return self._tensor(name, np.array(value, dtype=dtype))

    def _tensor(self, name, array) -> str:
        if name not in self.initializer_names:
            self.initializer_names.add(name)
            self.initializers.append(self.numpy_helper.from_array(array, name))
        return name


def qdq_graph(model, params: dict[str, QParams]):
    """`model` (an onnx.ModelProto, opset >= 13) in the explicit-quantization form TensorRT
    builds INT8 engines from: a QuantizeLinear-DequantizeLinear pair (int8, zero point 0,
    `params` of that tensor) on the activation input of every Conv and on both inputs of
    every Add of two activations (the residual additions TensorRT fuses into the convolution
    before them), and every Conv's weights stored as int8 behind a DequantizeLinear:
    symmetric, one scale per output channel, zero point 0, so pruned weights stay zero.
    Biases, pooling and the classifier stay in float. onnxruntime runs it on the CPU too."""
    import onnx
    from onnx import helper, numpy_helper

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        raise SparsebiasError(f"a QDQ graph with per-channel weights needs opset 13 or later; the model has {opset}")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    nodes, added, pairs = [], [], {}

    def constant(name, array):
        added.append(numpy_helper.from_array(array, name))
        return name

    def fake_quantized(name):
        if name not in pairs:
            if name not in params or not params[name].signed:
                raise SparsebiasError(f"cannot quantize tensor {name!r}: no symmetric int8 range was observed for it")
            scale = constant(f"{name}_scale", np.array(params[name].scale, np.float32))
            zp = constant(f"{name}_zp", np.array(0, np.int8))
            nodes.extend([
                helper.make_node("QuantizeLinear", [name, scale, zp], [f"{name}_quantized"],
                                 name=f"{name}_QuantizeLinear"),
                helper.make_node("DequantizeLinear", [f"{name}_quantized", scale, zp], [f"{name}_dequantized"],
                                 name=f"{name}_DequantizeLinear")])
            pairs[name] = f"{name}_dequantized"
        return pairs[name]

    int8_weights = set()
    for node in graph.node:
        if node.op_type == "Conv" and node.input[1] in weights:
            node.input[0] = fake_quantized(node.input[0])
            name = node.input[1]
            if name not in int8_weights:
                int8_weights.add(name)
                w = weights[name]
                scales = (np.abs(w).reshape(len(w), -1).max(axis=1) / INT8_MAX).astype(np.float32)
                scales[scales == 0] = 1.0
                q = np.clip(np.round(w / scales.reshape(-1, *[1] * (w.ndim - 1))), -INT8_MAX, INT8_MAX)
                nodes.append(helper.make_node(
                    "DequantizeLinear", [constant(f"{name}_int8", q.astype(np.int8)), constant(f"{name}_scale", scales),
                                         constant(f"{name}_zp", np.zeros(len(w), np.int8))],
                    [f"{name}_dequantized"], name=f"{name}_DequantizeLinear", axis=0))
            node.input[1] = f"{name}_dequantized"
        elif node.op_type == "Add" and all(x not in weights for x in node.input):
            for k, x in enumerate(node.input):
                node.input[k] = fake_quantized(x)
        nodes.append(node)
    kept = [i for i in graph.initializer if i.name not in int8_weights]
    del graph.node[:], graph.initializer[:], graph.value_info[:]
    graph.node.extend(nodes)
    graph.initializer.extend(kept + added)
    return model


def fake_quant_graph(fp32, int8):
    """The FP32 graph with the INT8 graph's quantization simulated in float: weights and biases
    replaced by their dequantized int8/int32 values, and a QuantizeLinear-DequantizeLinear pair
    after every tensor the INT8 graph quantizes, with its scale and zero point. Run by any
    engine, it is what `int8` should compute, up to the rounding of requantization."""
    import onnx
    from onnx import helper, numpy_helper

    q = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    model = onnx.ModelProto.FromString(fp32.SerializeToString())
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type != "Conv" or f"{node.input[1]}_int8" not in q:
            continue
        w_scale = q[f"{node.input[1]}_scale"]
        weights[node.input[1]].CopyFrom(numpy_helper.from_array(
            q[f"{node.input[1]}_int8"].astype(np.float32) * w_scale, node.input[1]))
        if len(node.input) > 2 and node.input[2]:
            x_scale = q[f"{node.input[0]}_scale"]
            weights[node.input[2]].CopyFrom(numpy_helper.from_array(
                (q[f"{node.input[2]}_int32"].astype(np.float64) * (np.float64(x_scale) * np.float64(w_scale)))
                .astype(np.float32), node.input[2]))
    quantized = [t for t in [i.name for i in graph.input] + [o for n in graph.node for o in n.output]
                 if f"{t}_scale" in q and f"{t}_zp" in q]
    fake = {name: f"{name}_fake_quant" for name in quantized}
    for node in graph.node:
        for k, x in enumerate(node.input):
            if x in fake:
                node.input[k] = fake[x]
    inserted = {}
    for name in quantized:
        graph.initializer.extend([numpy_helper.from_array(q[f"{name}_scale"], f"{name}_scale"),
                                  numpy_helper.from_array(q[f"{name}_zp"], f"{name}_zp")])
        inserted[name] = [helper.make_node("QuantizeLinear", [name, f"{name}_scale", f"{name}_zp"], [f"{name}_q"]),
                          helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zp"],
                                           [fake[name]])]
    ordered = []
    for name in [i.name for i in graph.input]:
        ordered += inserted.get(name, [])
    for node in graph.node:
        ordered.append(node)
        for out in node.output:
            ordered += inserted.get(out, [])
    del graph.node[:]
    graph.node.extend(ordered)
    return model


def read_qdq(model):
    """A QDQ graph (a quantization-aware model exported with its fake quantization as
    QuantizeLinear-DequantizeLinear pairs) taken apart: the float graph without the pairs, and
    the uint8 quantization of every tensor a pair stood after, for `quantize_graph`. A pair on
    a constant (a weight) is folded into the constant it dequantizes to."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producers = {out: node for node in graph.node for out in node.output}
    params: dict[str, QParams] = {}
    renamed: dict[str, str] = {}
    dropped: set[int] = set()
    folded = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        quantize = producers.get(node.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear":
            raise SparsebiasError(f"QDQ graph: {node.name or node.output[0]} dequantizes a tensor no QuantizeLinear "
                                  "produced")
        scale, zero_point = (constants.get(quantize.input[k]) if len(quantize.input) > k else None for k in (1, 2))
        if scale is None or zero_point is None or scale.size != 1 or zero_point.size != 1:
            raise SparsebiasError(f"QDQ graph: {quantize.name or quantize.output[0]} needs a constant scalar scale and "
                                  "zero point (per-tensor quantization)")
        source = quantize.input[0]
        if source in constants:
            info = np.iinfo(zero_point.dtype)
            steps = np.clip(np.round(constants[source] / scale) + zero_point, info.min, info.max)
            values = ((steps - zero_point.astype(np.float32)) * scale).astype(np.float32)
            folded.append(numpy_helper.from_array(values, node.output[0]))
        elif zero_point.dtype != np.uint8:
            raise SparsebiasError(f"QDQ graph: {source!r} is quantized to {zero_point.dtype}; sparsebias's INT8 graph "
                                  "takes uint8 activations")
        else:
            params[source] = QParams(float(scale.reshape(())), int(zero_point.reshape(())))
            renamed[node.output[0]] = source
        dropped.update((id(node), id(quantize)))
    kept = [node for node in graph.node if id(node) not in dropped]
    for node in kept:
        for k, name in enumerate(node.input):
            node.input[k] = renamed.get(name, name)
    for output in graph.output:
        output.name = renamed.get(output.name, output.name)
    used = {name for node in kept for name in node.input}
    kept = [node for node in kept if node.op_type != "Constant" or node.output[0] in used]   # the pairs' scales
    initializers = [i for i in graph.initializer if i.name in used] + folded
    del graph.node[:], graph.initializer[:], graph.value_info[:]
    graph.node.extend(kept)
    graph.initializer.extend(initializers)
    return model, params
