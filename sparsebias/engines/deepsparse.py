"""DeepSparse, Neural Magic's sparse CPU engine: it skips pruned weights.

What it cannot run itself (a QDQ graph, for one) it hands to its bundled onnxruntime
without a word; `describe()` says how much of the graph it ran, and bench reports it."""

from __future__ import annotations

from ..core.errors import first_line
from .base import Engine, EngineUnavailable


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
                "cores": self.num_cores, "supported_share": float(self._engine.fraction_of_supported_ops)}
