"""Engines by name: which exist, which run here, and what 'auto' means."""

from __future__ import annotations

from ..core.errors import SparsebiasError
from .base import Engine, EngineUnavailable, ModelSource
from .deepsparse import DeepSparseEngine
from .ort import OnnxRuntimeCudaEngine, OnnxRuntimeEngine, OnnxRuntimeTensorRTEngine
from .pytorch import TorchCudaBf16Engine, TorchCudaEngine, TorchCudaSparseEngine, TorchEngine

ENGINES = {cls.name: cls for cls in (DeepSparseEngine, OnnxRuntimeEngine, OnnxRuntimeCudaEngine,
                                     OnnxRuntimeTensorRTEngine, TorchEngine, TorchCudaEngine, TorchCudaBf16Engine,
                                     TorchCudaSparseEngine)}


AUTO = "auto"   # DeepSparse where it runs, else onnxruntime
AVAILABLE = "available"   # every engine that runs here


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
    if names == [AVAILABLE]:
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
