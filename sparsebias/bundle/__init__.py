"""The bundle: a model (model.onnx, model.pth), its manifest and split outputs, each file's
sha256 in the manifest, written atomically and optionally signed.

`export` (torch to ONNX, checked against onnxruntime) and `flops` (MACs of a graph,
dense and sparse) are imported by their module path, as they load torch and onnx.
"""

from .format import (
                     MANIFEST,
                     SIGNATURE,
                     Bundle,
                     BundleWriter,
                     as_bundle,
                     bundle_lock,
                     ensure_replaceable,
                     load_bundle,
                     sha256,
                     update_bundle,
)
from .manifest import Manifest
from .signing import generate_key, is_signed, sign_bundle, verify_bundle

__all__ = ["MANIFEST", "SIGNATURE", "Bundle", "BundleWriter", "Manifest", "as_bundle", "bundle_lock", "ensure_replaceable",
           "generate_key", "is_signed", "load_bundle", "sha256", "sign_bundle", "update_bundle", "verify_bundle"]
