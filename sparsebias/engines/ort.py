"""onnxruntime on CPU (the dense baseline every speedup is read against), CUDA and TensorRT."""

from __future__ import annotations

from ..core.errors import first_line
from ..core.ort_session import ort_session
from .base import Engine, EngineUnavailable


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    provider = "CPUExecutionProvider"
    provider_options: dict = {}
    hint = ""

    def __init__(self, model, batch_size, num_cores=None):
        super().__init__(model, batch_size, num_cores)
        import onnxruntime as ort

        try:
            self._session = ort_session(model.onnx_path, threads=self.num_cores,
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
