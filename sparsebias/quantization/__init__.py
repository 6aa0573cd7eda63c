"""INT8 quantization of a bundle, post-training (calibrated on its training images) or with
the ranges of its quantization-aware training (a recipe's QuantizationModifier), written as
a new bundle whose model.onnx is the QOperator graph DeepSparse runs whole (and onnxruntime
runs too), or, for TensorRT, the QDQ graph with int8 symmetric activations it builds INT8
engines from; with its val and test logits re-computed, and the change in accuracy and AUC
against its FP32 parent recorded in the manifest."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .._version import __version__
from ..bundle import Bundle, BundleWriter, as_bundle, bundle_lock, ensure_replaceable, sha256
from ..bundle.flops import count_flops
from ..core.errors import SparsebiasError, check_seed
from ..core.ort_session import ort_session
from ..core.outputs import Outputs
from ..data import open_data
from ..data.images import split_images, standardize
from .calibrate import BATCH, calibrated_params
from .graph import fake_quant_graph, qdq_graph, quantize_graph, read_qdq

CALIBRATION_SAMPLES = 512


@dataclass(frozen=True)
class Int8Target:
    """How one engine family wants its INT8 graph: the one place quantize() looks at the target."""

    scheme: dict                 # recorded in the manifest, in words
    symmetric_activations: bool  # int8 with zero point 0 (TensorRT), else uint8 asymmetric
    graph: Callable              # (FP32 graph, quantization params) -> INT8 graph
    simulation: Callable         # (FP32 graph, INT8 graph) -> its quantization simulated in float


TARGETS = {
    "deepsparse": Int8Target(
        scheme={"format": "QOperator (QLinearConv, com.microsoft QLinearAdd), opset 13",
                "weights": "int8, symmetric, per tensor, zero point 0 (pruned weights stay zero)",
                "activations": "uint8, asymmetric, per tensor, min-max calibrated; ReLU folded into the op "
                               "before it",
                "float": "max pooling (on its input's grid), global average pooling, the classifier"},
        symmetric_activations=False, graph=quantize_graph, simulation=fake_quant_graph),
    "tensorrt": Int8Target(
        scheme={"format": "QDQ (QuantizeLinear-DequantizeLinear pairs before each Conv and residual Add), "
                          "the FP32 graph's opset",
                "weights": "int8, symmetric, per output channel, zero point 0 (pruned weights stay zero)",
                "activations": "int8, symmetric, per tensor, zero point 0, min-max calibrated",
                "float": "biases, ReLU, pooling, the classifier"},
        # a QDQ graph is that simulation itself, run without onnxruntime fusing its pairs into int8 kernels
        symmetric_activations=True, graph=qdq_graph, simulation=lambda fp32, int8: int8)}


def quantize(bundle, *, calibration: int = CALIBRATION_SAMPLES, seed: int = 0, name: str | None = None,
             out_dir=None, data: str | None = None, target: str = "deepsparse", echo=print) -> Bundle:
    """Quantize a bundle's model to INT8 and write it as a new bundle (default: NAME-int8 beside
    it), calibrated on `calibration` training images drawn with `seed`; a bundle trained with a
    QuantizationModifier is quantized with the ranges it trained with (no calibration).
    `target`: "deepsparse" (QOperator, which onnxruntime runs too) or "tensorrt" (QDQ
    with int8 symmetric activations).

    >>> int8 = quantize("exported/resnet18_95")            # doctest: +SKIP
    >>> int8.manifest["quantization"]["change"]["test"]    # doctest: +SKIP
    """
    import onnx

    if target not in TARGETS:
        raise SparsebiasError(f"unknown INT8 target {target!r}; known: {', '.join(TARGETS)}")
    engine = TARGETS[target]
    parent = as_bundle(bundle)
    if "quantization" in parent.manifest:
        raise SparsebiasError(f"{parent.path} is already quantized ({parent.manifest['quantization']['precision']})")
    check_seed(seed)
    if calibration < 1:
        raise SparsebiasError(f"calibration: at least one image is needed, got {calibration}")
    destination = Path(out_dir or parent.path.parent) / (name or f"{parent.path.name}-int8")
    if destination.resolve() == parent.path.resolve():
        raise SparsebiasError(f"{destination}: the INT8 bundle would replace its own parent; give another name")
    ensure_replaceable(destination)
    spec, size = parent.manifest["input"], int(parent.manifest["input"]["shape"][-1])
    table = open_data(data or parent.manifest.data_spec, echo=echo)
    _check_same_data(parent, table)
    aware = parent.manifest.get("quantization_aware_training")
    if aware and engine.symmetric_activations:
        raise SparsebiasError(f"{parent.path} trained quantization-aware on uint8 asymmetric activations; its ranges "
                              f"do not make the int8 symmetric ones of --target {target}")
    if aware:
        echo(f"Quantizing {parent.path.name} with the activation ranges of its quantization-aware training")
        fp32, params = read_qdq(onnx.load(str(parent.file(aware["graph"]))))
        method = {"method": "quantization-aware training", "ranges": aware["activation_ranges"],
                  "training": {k: aware[k] for k in ("start_epoch", "disable_quantization_observer_epoch",
                                                     "freeze_bn_stats_epoch")}}
    else:
        train = split_images(table, "train", size)
        rows = np.sort(np.random.default_rng(seed).choice(len(train), size=min(calibration, len(train)),
                                                          replace=False))
        echo(f"Calibrating {parent.path.name} on {len(rows)} training image(s)")
        fp32 = onnx.load(str(parent.file("model.onnx")))
        params = calibrated_params(fp32, train[rows], spec, symmetric=engine.symmetric_activations)
        method = {"method": "post-training static",
                  "calibration": {"split": "train", "samples": int(len(rows)), "seed": seed, "ranges": "min-max"}}
    int8 = engine.graph(fp32, params)
    onnx.checker.check_model(int8)
    session = ort_session(int8)
    splits = {split: parent.split(split) for split in ("train", "val", "test")}
    images = {split: split_images(table, split, size) for split in ("val", "test")}
    logits = {split: _run(session, images[split], spec) for split in images}
    outputs = Outputs.from_manifest(parent.manifest)
    metrics = {split: outputs.score(parent.attribute_labels(splits[split]), logits[split]) for split in logits}
    with np.load(parent.file("check.npz"), allow_pickle=False) as check:
        check_inputs, check_fp32 = check["inputs"], check["logits"]
    check_int8 = session.run(None, {session.get_inputs()[0].name: check_inputs})[0]
    # what the INT8 graph should compute: the FP32 graph with its quantization simulated in float
    simulated = _run(ort_session(engine.simulation(fp32, int8), optimize=False), images["val"], spec)
    with bundle_lock(destination), BundleWriter(destination) as writer:
        onnx.save(int8, str(writer.file("model.onnx")))
        np.savez_compressed(writer.file("check.npz"), inputs=check_inputs, logits=check_int8)
        shutil.copy2(parent.file("recipe.yaml"), writer.file("recipe.yaml"))
        for split, arrays in splits.items():
            np.savez_compressed(writer.file(f"splits/{split}.npz"),
                                **{**arrays, **({"logits": logits[split].astype(np.float32)} if split in logits else {})})
        kept = {k: v for k, v in parent.manifest.items()
                if k not in ("schema_version", "files", "mitigations", "quantization_aware_training")}
        manifest = {
            **kept, "sparsebias_version": __version__, "name": destination.name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "quantization": {
                "precision": "int8", "target": target, **method, "scheme": engine.scheme,
                "parent": {"path": str(parent.path), "manifest_sha256": sha256(parent.path / "manifest.json")},
                "change": {split: {key: metrics[split][key] - parent.manifest["metrics"][split][key]
                                   for key in ("accuracy", "auc")} for split in metrics},
                "decisions_changed": {split: float(np.mean(outputs.predict(logits[split])
                                                           != outputs.predict(splits[split]["logits"])))
                                      for split in logits},
                "verified": {"split": "val", "against": "the FP32 graph with the same quantization simulated in "
                                                        "float (QuantizeLinear-DequantizeLinear, unoptimized)",
                             "mean_abs_diff_vs_simulated": float(np.abs(logits["val"] - simulated).mean()),
                             "mean_abs_diff_vs_fp32": float(np.abs(logits["val"] - splits["val"]["logits"]).mean()),
                             "max_abs_diff_vs_simulated": float(np.abs(logits["val"] - simulated).max()),
                             "decisions_differ_vs_simulated": float(np.mean(outputs.predict(logits["val"])
                                                                            != outputs.predict(simulated)))}},
            "flops": count_flops(int8).to_dict(),
            "metrics": metrics,
            "export": {**parent.manifest["export"],
                       "max_abs_diff_vs_fp32": float(np.abs(check_int8 - check_fp32).max()),
                       "note": "INT8 logits differ from FP32 by quantization error; stored logits are the INT8 "
                               "graph's own, as onnxruntime computes them"},
        }
        written = writer.commit(manifest)
    if parent.manifest.mitigations:
        echo(f"note: {parent.path.name}'s thresholds and override table were set on its FP32 logits and are not "
             f"carried over: calibrate the INT8 bundle again")
    return written


def _check_same_data(parent: Bundle, table) -> None:
    """Calibration images and re-computed logits must be the data set the parent was evaluated on."""
    for split in ("train", "val", "test"):
        if not np.array_equal(table.ids[table.split(split)], parent.split(split)["ids"]):
            raise SparsebiasError(f"the {split} images of the data set at {table.root} are not those of "
                                  f"{parent.path}: give --data the data set the bundle was trained on")


def _run(session, images: np.ndarray, spec: dict) -> np.ndarray:
    name = session.get_inputs()[0].name
    out = [session.run(None, {name: standardize(images[i:i + BATCH], spec["mean"], spec["std"])})[0]
           for i in range(0, len(images), BATCH)]
    return np.concatenate(out)


__all__ = ["CALIBRATION_SAMPLES", "TARGETS", "Int8Target", "quantize"]
