"""sparsebias: compress vision classifiers, run them sparse, audit them for bias."""

import os

__version__ = "0.1.0"

# deepsparse, sparseml and sparsezoo reach for the network at import unless told not to.
os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

from .errors import SparsebiasError  # noqa: E402

__all__ = ["SparsebiasError", "__version__", "compress", "load_bundle", "open_data"]


def __getattr__(name):
    # The heavy modules (torch, sparseml) load only when used.
    if name == "compress":
        from .compress import compress
        return compress
    if name == "load_bundle":
        from .bundle import load_bundle
        return load_bundle
    if name == "open_data":
        from .data import open_data
        return open_data
    raise AttributeError(name)
