"""ONNX export, checked against torch on a real batch before anything is kept."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

OPSET = 13
INPUT_NAME, OUTPUT_NAME = "input", "logits"
TOLERANCE = 1e-3  # max abs logit difference torch vs onnxruntime that we accept


class ExportError(RuntimeError):
    """The exported graph does not compute what the torch model computes."""


def export_onnx(model: nn.Module, path: Path, batch: torch.Tensor, tolerance: float = TOLERANCE,
                optimize: bool = True) -> dict:
    """Export with a dynamic batch axis; verify with onnx.checker and onnxruntime vs torch
    (`optimize=False`: onnxruntime computing each node as written, e.g. QDQ pairs in float)."""
    import onnx
    import onnxruntime as ort

    model.eval()
    options = dict(opset_version=OPSET, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                   dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "dynamo" in inspect.signature(torch.onnx.export).parameters:   # torch >= 2.5: the TorchScript exporter
            torch.onnx.export(model, batch, str(path), dynamo=False, **options)
        else:
            torch.onnx.export(model, batch, str(path), **options)
    onnx.checker.check_model(str(path))
    with torch.no_grad():
        expected = model(batch).numpy()
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    if not diff <= tolerance:
        raise ExportError(f"ONNX output differs from torch by {diff:.3g} (> {tolerance})")
    return {"opset": OPSET, "input": INPUT_NAME, "output": OUTPUT_NAME, "check_batch": int(len(batch)),
            "max_abs_diff_vs_torch": diff, "checked_with": f"onnxruntime {ort.__version__}"
            + ("" if optimize else ", unoptimized")}
