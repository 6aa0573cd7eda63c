"""ONNX export, checked against torch on a real batch before anything is kept."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.ort_session import ort_session
from ..core.tolerance import EXPORT_TOLERANCE, logit_tolerance

OPSET = 13
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class ExportError(RuntimeError):
    """The exported graph does not compute what the torch model computes."""


def export_onnx(model: nn.Module, path: Path, batch: torch.Tensor, tolerance: float = EXPORT_TOLERANCE) -> dict:
    """Export with a dynamic batch axis; verify with onnx.checker and onnxruntime vs torch."""
    got, expected, checked = _export_and_run(model, path, batch, optimize=True)
    diff = float(np.abs(got - expected).max())
    allowed = logit_tolerance(tolerance, expected)
    if not diff <= allowed:
        raise ExportError(f"ONNX output differs from torch by {diff:.3g} (> {allowed:.3g})")
    return {**checked, "max_abs_diff_vs_torch": diff}


def export_qdq(aware: nn.Module, fp32: nn.Module, path: Path, batch: torch.Tensor) -> dict:
    """Export a fake-quantized model as its QDQ graph, checked in float against it.

    Both compute in float but sum in different orders, so a value on a rounding boundary can
    land one quantization step apart, and that step moves the rest of its image's logits
    (measured: 10-40% of images, by up to 0.15 on a resnet50; the mean difference 4-22% of
    the mean change quantization makes). A wrong scale or zero point moves every value of its
    tensor, by about as much as quantization does. So the graph passes when its mean
    difference is under half the mean change quantization makes (`fp32`: the model
    unquantized); median and maximum are recorded beside it.
    """
    got, expected, checked = _export_and_run(aware, path, batch, optimize=False)
    with torch.no_grad():
        unquantized = fp32.eval()(batch).numpy()
    return {**checked, **qdq_agreement(got, expected, unquantized)}


def qdq_agreement(qdq: np.ndarray, fake_quant: np.ndarray, unquantized: np.ndarray) -> dict:
    """export_qdq's verdict on three sets of logits; raises ExportError when they disagree."""
    diff = np.abs(qdq - fake_quant)
    quantization = float(np.abs(fake_quant - unquantized).mean())
    if not diff.mean() <= max(quantization / 2, EXPORT_TOLERANCE):
        raise ExportError(f"the QDQ graph differs from the fake-quantized torch model by {diff.mean():.3g} on "
                          f"average, more than half of what quantization changes ({quantization:.3g})")
    return {"max_abs_diff_vs_torch": float(diff.max()), "median_abs_diff_vs_torch": float(np.median(diff)),
            "mean_abs_diff_vs_torch": float(diff.mean()), "mean_abs_change_by_quantization": quantization}


def _export_and_run(model: nn.Module, path: Path, batch: torch.Tensor, optimize: bool):
    """The exported graph's logits on `batch`, torch's, and the export's description
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
    session = ort_session(path, optimize=optimize)
    got = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]
    return got, expected, {"opset": OPSET, "input": INPUT_NAME, "output": OUTPUT_NAME, "check_batch": int(len(batch)),
                           "checked_with": f"onnxruntime {ort.__version__}" + ("" if optimize else ", unoptimized")}
