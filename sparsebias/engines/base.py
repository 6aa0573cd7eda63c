"""Inference engines behind one interface: a model in, logits out.

    deepsparse            Neural Magic's sparse CPU engine: skips pruned weights
    onnxruntime           onnxruntime on CPU: runs the same graph dense
    onnxruntime-cuda      onnxruntime's CUDA execution provider (needs onnxruntime-gpu and a GPU)
    onnxruntime-tensorrt  onnxruntime's TensorRT provider, 2:4 structured sparsity enabled
    torch                 the bundle's torch weights in eager mode: the reference
    torch-cuda            the bundle's torch weights on the GPU in fp16 (torch-cuda-bf16: bf16)
    torch-cuda-sparse     as torch-cuda, its 2:4 layers on sparse tensor cores (semi-structured)

Back ends are imported when first used, so a missing one costs nothing until asked
for, and then fails with `EngineUnavailable`: one line saying what is missing.
Engines never know about attributes or bias; they map float input to logits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..bundle import Bundle, load_bundle
from ..core.errors import SparsebiasError, check_file, first_line


INT8_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QuantizeLinear"}


class EngineUnavailable(SparsebiasError):
    """The back end cannot run here (not installed, no GPU, unsupported CPU)."""


@dataclass(frozen=True)
class ModelSource:
    """What engines load: an ONNX file, and the bundle it belongs to when there is one."""

    onnx_path: Path
    input_name: str
    output_name: str
    input_shape: tuple[int, int, int]   # (C, H, W); the batch axis is the engine's
    fixed_batch: int | None             # the graph's batch size when it is not dynamic
    bundle: object | None = field(default=None, repr=False)
    int8: bool = False                  # the graph computes in integers (QOperator or QDQ)

    @property
    def name(self) -> str:
        return self.bundle.path.name if self.bundle is not None else self.onnx_path.stem

    def check_batch(self, batch_size: int) -> None:
        if batch_size < 1:
            raise SparsebiasError(f"batch size must be at least 1, got {batch_size}")
        if self.fixed_batch is not None and self.fixed_batch != batch_size:
            raise SparsebiasError(f"{self.onnx_path}: input {self.input_name!r} has a fixed batch of "
                                  f"{self.fixed_batch}, cannot run batch {batch_size}")


def open_model(path) -> ModelSource:
    """A bundle (loaded, or its folder: verified) or a plain .onnx file."""
    if isinstance(path, Bundle):
        return bundle_model(path)
    path = Path(path)
    if path.is_dir():
        return bundle_model(load_bundle(path))
    check_file(path, "model")
    return _describe_onnx(path, None)


def bundle_model(bundle) -> ModelSource:
    """The model of a bundle that is already loaded (and so verified)."""
    return _describe_onnx(bundle.file("model.onnx"), bundle)


def _describe_onnx(path: Path, bundle) -> ModelSource:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(str(path))   # by path: external data is found beside the model
    except Exception as e:  # protobuf raises DecodeError, the checker ValidationError
        reason = first_line(e, 160)
        raise SparsebiasError(f"{path}: not a valid ONNX model ({reason})") from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise SparsebiasError(f"{path}: expected one image input and one logits output, "
                              f"found {len(inputs)} input(s) and {len(model.graph.output)} output(s)")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not all(d.dim_value > 0 for d in dims[1:]):
        shape = [d.dim_value or d.dim_param or "?" for d in dims]
        raise SparsebiasError(f"{path}: input {inputs[0].name!r} has shape {shape}, expected (batch, C, H, W) with "
                              "C, H and W fixed (export the model at one image size)")
    return ModelSource(onnx_path=path, input_name=inputs[0].name, output_name=model.graph.output[0].name,
                       input_shape=tuple(d.dim_value for d in dims[1:]),
                       fixed_batch=dims[0].dim_value or None, bundle=bundle,
                       int8=any(node.op_type in INT8_OPS for node in model.graph.node))


class Engine:
    """A model compiled for one batch size and a number of CPU cores (or a GPU)."""

    name: str = ""
    tolerance: float = 1e-4  # max |logit difference| from onnxruntime on CPU (fp32) expected of this engine
    # (for logits up to 100 in size; core.tolerance)

    def __init__(self, model: ModelSource, batch_size: int, num_cores: int | None = None):
        model.check_batch(batch_size)
        reason = self.cannot_load(model)
        if reason:
            raise EngineUnavailable(f"{self.name}: {reason}")
        self.model = model
        self.batch_size = batch_size
        available = os.cpu_count() or 1
        if num_cores is not None and not 1 <= num_cores <= available:
            raise SparsebiasError(f"{num_cores} cores asked for; this machine has {available} CPU(s)")
        self.num_cores = num_cores or physical_cores()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this back end cannot run here, checked without loading a model; None when it can."""
        return None

    @classmethod
    def cannot_load(cls, model: ModelSource) -> str | None:
        """Why this back end cannot run this model; None when it can."""
        return None

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """Logits for exactly `batch_size` inputs."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Version and device facts recorded beside every measurement."""
        raise NotImplementedError

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Logits for any number of inputs: cut into batches, the last one zero-padded."""
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        out = []
        for start in range(0, len(inputs), self.batch_size):
            chunk = inputs[start:start + self.batch_size]
            pad = self.batch_size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
            out.append(self.run_batch(chunk)[:self.batch_size - pad])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def physical_cores() -> int:
    """Physical cores (what DeepSparse counts); logical CPUs where that cannot be read."""
    try:
        pairs = set()
        for cpu in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology"):
            pairs.add(((cpu / "physical_package_id").read_text(), (cpu / "core_id").read_text()))
        return len(pairs) or os.cpu_count() or 1
    except OSError:
        return os.cpu_count() or 1
