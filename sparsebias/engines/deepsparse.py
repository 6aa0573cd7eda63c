"""DeepSparse, Neural Magic's sparse CPU engine: it skips pruned weights.

What it cannot run itself (a QDQ graph, for one) it hands to its bundled onnxruntime
without a word; `describe()` says how much of the graph it ran, and bench reports it.

Compiling a sparse INT8 graph, DeepSparse 1.8 can fail an assertion in its sparse
convolution kernels that aborts the whole process: a 90%-sparse resnet18 at batch 16 and 32,
not at 1, 8, 12 or 24, both on a 2-core AMD EPYC (AVX2, INT8 emulated) and on a 2-core Intel
Xeon with AVX-512 VNNI (there at 64 too). So an INT8 graph is compiled in a child process
first, and the abort becomes one line, not the end of the command.
"""

from __future__ import annotations

import subprocess
import sys

from ..core.errors import first_line
from .base import Engine, EngineUnavailable

# Same integer arithmetic as onnxruntime, but a requantization that rounds the other way moves the
# layers after it: up to 0.1 measured (a tiny resnet18, AVX2). A wrong scale moves logits by whole units.
INT8_TOLERANCE = 0.2


class DeepSparseEngine(Engine):
    name = "deepsparse"

    def __init__(self, model, batch_size, num_cores=None):
        super().__init__(model, batch_size, num_cores)
        import deepsparse

        if model.int8:
            self.tolerance = INT8_TOLERANCE
            _compile_in_a_child(model.onnx_path, batch_size, self.num_cores)
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


def _compile_in_a_child(path, batch_size: int, cores: int) -> None:
    code = ("import sys, deepsparse; "
            "deepsparse.compile_model(sys.argv[1], batch_size=int(sys.argv[2]), num_cores=int(sys.argv[3]))")
    child = subprocess.run([sys.executable, "-c", code, str(path), str(batch_size), str(cores)],
                           capture_output=True, text=True)
    if child.returncode != 0:
        raise EngineUnavailable(f"deepsparse aborted compiling the INT8 graph {path} at batch {batch_size}: its sparse "
                                "INT8 kernels failed an assertion (DeepSparse 1.8, at some batch sizes); "
                                "run it on onnxruntime, or try another batch size")
