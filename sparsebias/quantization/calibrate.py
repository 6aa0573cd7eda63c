"""Activation ranges for post-training quantization: the FP32 graph run on calibration images
with every intermediate tensor exposed, min and max kept per tensor."""

from __future__ import annotations

from ..core.errors import SparsebiasError


def activation_ranges(model, batches) -> dict[str, tuple[float, float]]:
    """(min, max) of the graph input and of every float tensor a node produces, over `batches`
    (float32 arrays the graph takes). `model` is an onnx.ModelProto."""
    import onnx
    import onnxruntime as ort

    exposed = onnx.ModelProto.FromString(model.SerializeToString())
    known = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        for name in node.output:
            if name not in known:
                exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
                known.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL   # keep every tensor
    options.log_severity_level = 3
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    ranges: dict[str, list[float]] = {}
    for batch in batches:
        values = session.run(names, {input_name: batch})
        for name, value in ((input_name, batch), *zip(names, values)):
            if value.dtype.kind != "f" or not value.size:
                continue
            low, high = float(value.min()), float(value.max())
            if name in ranges:
                ranges[name] = [min(ranges[name][0], low), max(ranges[name][1], high)]
            else:
                ranges[name] = [low, high]
    if not ranges:
        raise SparsebiasError("no calibration images")
    return {name: (low, high) for name, (low, high) in ranges.items()}
