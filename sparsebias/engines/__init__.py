"""Running models: one module per back end (DeepSparse; onnxruntime on CPU, CUDA or TensorRT;
torch on CPU or CUDA, with 2:4 sparse kernels), `bench` to measure them side by side, and
`predict` to run a bundle on image files as it is deployed."""

from .base import Engine, EngineUnavailable, ModelSource, bundle_model, open_model, physical_cores
from .benchmark import BenchReport, bench
from .deepsparse import DeepSparseEngine
from .ort import OnnxRuntimeCudaEngine, OnnxRuntimeEngine, OnnxRuntimeTensorRTEngine
from .prediction import Predictions, predict, predictions_csv
from .pytorch import TorchCudaBf16Engine, TorchCudaEngine, TorchCudaSparseEngine, TorchEngine
from .registry import AUTO, ENGINES, available_engines, default_engine, load_engine, parse_engines, require_engine

__all__ = ["AUTO", "ENGINES", "BenchReport", "DeepSparseEngine", "Engine", "EngineUnavailable", "ModelSource",
           "OnnxRuntimeCudaEngine", "OnnxRuntimeEngine", "OnnxRuntimeTensorRTEngine", "Predictions",
           "TorchCudaBf16Engine", "TorchCudaEngine", "TorchCudaSparseEngine", "TorchEngine", "available_engines",
           "bench", "bundle_model", "default_engine", "load_engine", "open_model", "parse_engines", "physical_cores",
           "predict", "predictions_csv", "require_engine"]
