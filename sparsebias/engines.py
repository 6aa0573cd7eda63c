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

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SparsebiasError, first_line


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
    """A bundle folder (verified) or a plain .onnx file."""
    from .bundle import load_bundle

    path = Path(path)
    if path.is_dir():
        return bundle_model(load_bundle(path))
    if not path.is_file():
        raise SparsebiasError(f"model not found: {path}")
    return _describe_onnx(path, None)


def bundle_model(bundle) -> ModelSource:
    """The model of a bundle that is already loaded (and so verified)."""
    return _describe_onnx(bundle.file("model.onnx"), bundle)


def _describe_onnx(path: Path, bundle) -> ModelSource:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
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
        raise SparsebiasError(f"{path}: input {inputs[0].name!r} has shape {shape}, expected (batch, C, H, W)")
    return ModelSource(onnx_path=path, input_name=inputs[0].name, output_name=model.graph.output[0].name,
                       input_shape=tuple(d.dim_value for d in dims[1:]),
                       fixed_batch=dims[0].dim_value or None, bundle=bundle)


class Engine:
    """A model compiled for one batch size and a number of CPU cores (or a GPU)."""

    name: str = ""
    tolerance: float = 1e-4  # max |logit difference| from onnxruntime on CPU (fp32) expected of this engine

    def __init__(self, model: ModelSource, batch_size: int, num_cores: int | None = None):
        model.check_batch(batch_size)
        reason = self.cannot_load(model)
        if reason:
            raise EngineUnavailable(f"{self.name}: {reason}")
        self.model = model
        self.batch_size = batch_size
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


class DeepSparseEngine(Engine):
    name = "deepsparse"

    def __init__(self, model, batch_size, num_cores=None):
        super().__init__(model, batch_size, num_cores)
        import deepsparse

        try:
            self._engine = deepsparse.compile_model(str(model.onnx_path), batch_size=batch_size,
                                                    num_cores=self.num_cores)
        except Exception as e:
            raise EngineUnavailable(f"deepsparse could not compile {model.onnx_path}: {first_line(e)}") from None
        self._version = deepsparse.__version__

    @classmethod
    def unavailable_reason(cls):
        try:
            import deepsparse  # noqa: F401
        except ModuleNotFoundError:
            return "DeepSparse is not installed (pip install 'sparsebias[deepsparse]', on Python 3.11)"
        except Exception as e:  # its own error on an unsupported CPU
            return f"deepsparse cannot be imported ({first_line(e)})"
        return None

    def run_batch(self, batch):
        return self._engine.run([batch])[0]

    def describe(self):
        return {"engine": self.name, "version": f"deepsparse {self._version}", "device": "cpu",
                "cores": self.num_cores}


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    provider = "CPUExecutionProvider"
    provider_options: dict = {}
    hint = ""

    def __init__(self, model, batch_size, num_cores=None):
        super().__init__(model, batch_size, num_cores)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.num_cores
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(model.onnx_path), options,
                                                 providers=[(self.provider, self.provider_options)])
        except Exception as e:
            raise EngineUnavailable(f"{self.name} could not load {model.onnx_path}: {first_line(e)}") from None
        if self._session.get_providers()[0] != self.provider:  # onnxruntime falls back to CPU silently
            raise EngineUnavailable(f"{self.name}: {self.provider} did not start{self.hint}")
        self._version = ort.__version__

    @classmethod
    def unavailable_reason(cls):
        import onnxruntime as ort

        if cls.provider not in ort.get_available_providers():
            return f"onnxruntime {ort.__version__} here has no {cls.provider}{cls.hint}"
        return None

    def run_batch(self, batch):
        return self._session.run([self.model.output_name], {self.model.input_name: batch})[0]

    def describe(self):
        return {"engine": self.name, "version": f"onnxruntime {self._version}", "provider": self.provider,
                "device": "cpu" if self.provider == "CPUExecutionProvider" else "gpu", "cores": self.num_cores}


class OnnxRuntimeCudaEngine(OnnxRuntimeEngine):
    name = "onnxruntime-cuda"
    provider = "CUDAExecutionProvider"
    hint = " (install onnxruntime-gpu in place of onnxruntime, on a machine with an NVIDIA GPU)"
    tolerance = 1e-2   # cuDNN may pick TF32 (10-bit mantissa) convolutions


class OnnxRuntimeTensorRTEngine(OnnxRuntimeEngine):
    name = "onnxruntime-tensorrt"
    provider = "TensorrtExecutionProvider"
    provider_options = {"trt_sparsity_enable": True}  # lets TensorRT use 2:4 sparse kernels
    tolerance = 1e-2
    hint = " (install onnxruntime-gpu and TensorRT, on a machine with an NVIDIA GPU)"


class TorchEngine(Engine):
    """The bundle's own torch weights, eager: the reference the exported graph was checked against."""

    name = "torch"

    def __init__(self, model, batch_size, num_cores=None):
        super().__init__(model, batch_size, num_cores)
        import torch

        self._torch = torch
        self._model = _bundle_model(model).eval()

    @classmethod
    def cannot_load(cls, model):
        if model.bundle is None:
            return f"{model.onnx_path} is a bare ONNX file; the torch engine needs a bundle's weights"
        return None

    def run_batch(self, batch):
        torch = self._torch
        threads = torch.get_num_threads()  # torch's thread count is process-wide: restore it after
        torch.set_num_threads(self.num_cores)
        try:
            with torch.inference_mode():
                return self._model(torch.from_numpy(batch)).numpy()
        finally:
            torch.set_num_threads(threads)

    def describe(self):
        return {"engine": self.name, "version": f"torch {self._torch.__version__}", "device": "cpu",
                "cores": self.num_cores}


class TorchCudaEngine(Engine):
    """The bundle's torch weights on a GPU in half precision, channels_last, eager."""

    name = "torch-cuda"
    dtype_name = "fp16"
    sparse = False
    tolerance = 5e-2   # half-precision activations: about 3 significant digits on logits of order 10

    def __init__(self, model, batch_size, num_cores=None):
        super().__init__(model, batch_size, num_cores)
        import torch

        from .devices import DTYPES, describe
        from .models import prunable_weights
        from .semistructured import sparsify_2_4

        self._torch, self._dtype = torch, DTYPES[self.dtype_name]
        self._device = torch.device("cuda", torch.cuda.current_device())
        self._gpu = describe(self._device)
        net = _bundle_model(model).to(self._device, self._dtype)
        self._weights = sum(w.numel() for w in prunable_weights(net).values())
        self.sparse_layers = self.sparse_weights = 0
        if self.sparse:   # layers that are not 2:4 run dense, and describe() says how many did not
            self.sparse_layers, self.sparse_weights = sparsify_2_4(net)
        self._model = net.to(memory_format=torch.channels_last).eval()

    @classmethod
    def unavailable_reason(cls):
        import torch

        if not torch.cuda.is_available():
            return f"torch {torch.__version__} sees no CUDA GPU"
        if cls.dtype_name == "bf16" and not torch.cuda.is_bf16_supported():
            return f"{torch.cuda.get_device_name()} has no bf16"
        return None

    @classmethod
    def cannot_load(cls, model):
        return TorchEngine.cannot_load(model)

    def run_batch(self, batch):
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self._device, self._dtype, non_blocking=True)
            return self._model(x.contiguous(memory_format=torch.channels_last)).float().cpu().numpy()

    def describe(self):
        info = {"engine": self.name, "version": f"torch {self._torch.__version__} (CUDA {self._torch.version.cuda})",
                "device": "gpu", "gpu": self._gpu, "dtype": self.dtype_name}
        if self.sparse:   # what ran on sparse kernels, never a silent dense fallback
            info.update(sparse_layers=self.sparse_layers, sparse_weight_share=round(self.sparse_weights / self._weights, 4))
        return info


class TorchCudaBf16Engine(TorchCudaEngine):
    name = "torch-cuda-bf16"
    dtype_name = "bf16"
    tolerance = 2e-1   # bf16 keeps 8 mantissa bits: about 2 significant digits


class TorchCudaSparseEngine(TorchCudaEngine):
    name = "torch-cuda-sparse"
    sparse = True


def _bundle_model(model: ModelSource):
    from .checkpoint import state_dict_from
    from .models import build_model

    manifest = model.bundle.manifest
    net = build_model(manifest["architecture"], len(manifest["attributes"]))
    net.load_state_dict(state_dict_from(model.bundle.file("model.pt")))
    return net


ENGINES = {cls.name: cls for cls in (DeepSparseEngine, OnnxRuntimeEngine, OnnxRuntimeCudaEngine,
                                     OnnxRuntimeTensorRTEngine, TorchEngine, TorchCudaEngine, TorchCudaBf16Engine,
                                     TorchCudaSparseEngine)}


AUTO = "auto"   # DeepSparse where it runs, else onnxruntime


def require_engine(name: str) -> type[Engine]:
    """The engine class by name ('auto': DeepSparse where it runs, else onnxruntime), refusing an
    unknown name or a back end that cannot run here."""
    if name == AUTO:
        name = default_engine()
    if name not in ENGINES:
        raise SparsebiasError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
    reason = ENGINES[name].unavailable_reason()
    if reason:
        raise EngineUnavailable(f"{name} is not available here: {reason}")
    return ENGINES[name]


def load_engine(name: str, model: ModelSource, batch_size: int = 1, num_cores: int | None = None) -> Engine:
    return require_engine(name)(model, batch_size, num_cores)


def default_engine() -> str:
    """What 'auto' means: DeepSparse where it is installed and runs, else onnxruntime."""
    return "deepsparse" if DeepSparseEngine.unavailable_reason() is None else "onnxruntime"


def parse_engines(text: str) -> list[str]:
    """'auto,onnxruntime' -> names, checked ('auto' resolved); 'available' -> every engine that runs here."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["available"]:
        return available_engines()
    names = [default_engine() if n == AUTO else n for n in names]
    unknown = [n for n in names if n not in ENGINES]
    if unknown or not names:
        raise SparsebiasError(f"unknown engine {unknown[0] if unknown else text!r}; "
                              f"known: {', '.join(ENGINES)}, 'auto' or 'available'")
    return list(dict.fromkeys(names))


def available_engines() -> list[str]:
    """Engines whose back end is installed and has its device here."""
    return [name for name, cls in ENGINES.items() if cls.unavailable_reason() is None]


def physical_cores() -> int:
    """Physical cores (what DeepSparse counts); logical CPUs where that cannot be read."""
    import os

    try:
        pairs = set()
        for cpu in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology"):
            pairs.add(((cpu / "physical_package_id").read_text(), (cpu / "core_id").read_text()))
        return len(pairs) or os.cpu_count() or 1
    except OSError:
        return os.cpu_count() or 1
