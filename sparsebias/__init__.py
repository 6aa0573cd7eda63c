"""sparsebias: compress vision classifiers, run them sparse, audit them for bias.

The verbs, each a plain function (the CLI is a thin layer over them):

    bundle = sparsebias.compress("recipes/resnet18_99.yaml")
    int8 = sparsebias.quantize(bundle)                                 # an INT8 bundle beside it
    report = sparsebias.audit(bundle, "exported/resnet18_dense")      # .to_frame(): one row per attribute
    sparsebias.calibrate(bundle); sparsebias.overrides(bundle, "exported/resnet18_dense")
    result = sparsebias.gate(bundle, "policies/release.yaml")          # .passed, .to_frame()
    speed = sparsebias.bench([bundle], reference="exported/resnet18_dense")
    found = sparsebias.predict(bundle, ["photos/"])                    # .to_frame(): one row per image
    study = sparsebias.sweep(["recipes/resnet18_dense.yaml", "recipes/resnet18_99.yaml"], "runs/mine")

Results have `to_dict()` (what the CLI writes as JSON) and `to_frame()` (pandas).
"""

import os

# deepsparse, sparseml and sparsezoo reach for the network at import unless told not to.
os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

from ._version import __version__  # noqa: E402
from .core.errors import SparsebiasError  # noqa: E402

# verb -> the stage that offers it; loaded on first use, so `import sparsebias` does not load torch
_VERBS = {
    "compress": "training", "quantize": "quantization", "load_bundle": "bundle", "open_data": "data", "audit": "auditing",
    "calibrate": "auditing", "overrides": "auditing", "gate": "policy", "bench": "engines", "predict": "engines",
    "sweep": "study", "AuditReport": "auditing", "GateResult": "policy", "BenchReport": "engines",
    "Predictions": "engines", "Study": "study", "Bundle": "bundle",
}

__all__ = ["AuditReport", "BenchReport", "Bundle", "GateResult", "Predictions", "SparsebiasError", "Study",
           "__version__", "audit", "bench", "calibrate", "compress", "gate", "load_bundle", "open_data", "overrides",
           "predict", "quantize", "sweep"]


def __getattr__(name):
    if name not in _VERBS:
        raise AttributeError(f"module 'sparsebias' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_VERBS[name]}", __name__), name)
    globals()[name] = value   # later look-ups skip this function
    return value


def __dir__():
    return sorted(__all__)
