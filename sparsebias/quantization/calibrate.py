"""Activation quantization for post-training INT8: the FP32 graph run on calibration images
with every intermediate tensor exposed, min and max kept per tensor, each range turned into
its uint8 scale and zero point (or, for TensorRT, its symmetric int8 scale)."""

from __future__ import annotations

import numpy as np

from ..core.errors import SparsebiasError
from ..core.int8 import QParams
from ..core.ort_session import ort_session
from ..data.images import standardize

BATCH = 64


def calibrated_params(model, images: np.ndarray, spec: dict, symmetric: bool = False) -> dict[str, QParams]:
    """uint8 (or, `symmetric`, int8 with zero point 0) quantization of the graph input and of
    every float tensor a node produces, from min-max ranges over `images` (uint8 NCHW,
    standardized with the bundle input `spec`'s mean and std). `model` is an onnx.ModelProto."""
    import onnx

    exposed = onnx.ModelProto.FromString(model.SerializeToString())
    known = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        for name in node.output:
            if name not in known:
                exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
                known.add(name)
    session = ort_session(exposed, optimize=False)   # keeps every tensor
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    ranges: dict[str, list[float]] = {}
    for start in range(0, len(images), BATCH):
        batch = standardize(images[start:start + BATCH], spec["mean"], spec["std"])
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
    make = QParams.symmetric if symmetric else QParams.from_range
    return {name: make(low, high) for name, (low, high) in ranges.items()}
