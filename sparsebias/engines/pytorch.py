"""The bundle's torch weights: eager on CPU (the reference), and on a GPU in fp16/bf16, 2:4 layers
on sparse tensor cores."""

from __future__ import annotations

from .base import Engine, ModelSource


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
        if not model.bundle.has("model.pt"):
            return f"{model.bundle.path} has no torch weights (an INT8 bundle runs as ONNX only)"
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

        from ..core.devices import DTYPES, describe
        from ..training.models import prunable_weights
        from .semistructured import sparsify_2_4

        self._torch, self._dtype = torch, DTYPES[self.dtype_name]
        self._device = torch.device("cuda", torch.cuda.current_device())
        self._gpu = describe(self._device)
        net = _bundle_model(model).to(self._device, self._dtype).to(memory_format=torch.channels_last).eval()
        self._weights = sum(w.numel() for w in prunable_weights(net).values())
        self.sparse_layers = self.sparse_weights = 0
        if self.sparse:   # last: semi-structured tensors support few `.to()` conversions
            self.sparse_layers, self.sparse_weights = sparsify_2_4(net)   # non-2:4 layers run dense, and say so
        self._model = net

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
    from ..training.checkpoint import state_dict_from
    from ..training.models import build_model

    manifest = model.bundle.manifest
    net = build_model(manifest.architecture, len(manifest.attributes))
    net.load_state_dict(state_dict_from(model.bundle.file("model.pt")))
    return net
