"""The bundle: a folder a deployment ships as is, verified on every load.

    NAME/manifest.json    schema version, model and data description, sha256 of every file
    NAME/model.onnx       the model (input: normalised NCHW float32, output: logits)
    NAME/model.pt         the torch state dict (for fine-tuning, GMP-PT, the torch engine)
    NAME/recipe.yaml      the recipe as written
    NAME/check.npz        a batch of real inputs (as fed to the model) and the torch logits for them
    NAME/splits/*.npz     ids and labels of each split, logits of val and test

Writes are atomic: the bundle is built in a hidden sibling folder and renamed into place,
so an interrupted command never leaves a folder that loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SparsebiasError
from .report.files import json_default

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict

    @property
    def attributes(self) -> list[str]:
        return self.manifest["attributes"]

    def require_binary(self, command: str) -> None:
        """Thresholds, override tables and gate policies are per binary attribute."""
        if "heads" in self.manifest["output"]:
            raise SparsebiasError(f"{self.path}: {command} works on bundles of binary attributes; this one classifies "
                                  f"{', '.join(self.attributes)} (class heads): use `sparsebias audit` in group mode")

    def file(self, name: str) -> Path:
        return self.path / name

    def attribute_labels(self, split_data: dict) -> np.ndarray:
        """The labels of the model's own attributes, in output order, from a `split()` result."""
        names = list(self.manifest["label_names"])
        return split_data["labels"][:, [names.index(a) for a in self.attributes]]

    def split(self, name: str) -> dict[str, np.ndarray]:
        """ids, labels (all label names) and, for val and test, logits (trained attributes)."""
        path = self.file(f"splits/{name}.npz")
        if not path.is_file():
            raise SparsebiasError(f"bundle {self.path} has no split {name!r}")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def ensure_replaceable(path: Path) -> None:
    """A bundle may overwrite an older bundle, never a folder of something else."""
    if Path(path).exists() and not (Path(path) / MANIFEST).is_file():
        raise SparsebiasError(f"{path} exists and is not a bundle; refusing to replace it")


class BundleWriter:
    """Stage files in a hidden folder; `commit` writes the manifest and swaps the folder in."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.staging = self.path.with_name(f".{self.path.name}.staging-{os.getpid()}")
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        shutil.rmtree(self.staging, ignore_errors=True)
        return False

    def file(self, name: str) -> Path:
        """Where to write a bundle file; parent folders are created."""
        path = self.staging / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def commit(self, manifest: dict) -> Bundle:
        files = sorted(str(p.relative_to(self.staging)) for p in self.staging.rglob("*") if p.is_file())
        manifest = {"schema_version": SCHEMA_VERSION, **manifest,
                    "files": {name: sha256(self.staging / name) for name in files}}
        (self.staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=json_default) + "\n")
        old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
        if self.path.exists():
            ensure_replaceable(self.path)
            self.path.rename(old)
        self.staging.rename(self.path)
        shutil.rmtree(old, ignore_errors=True)
        return Bundle(self.path, manifest)


def load_bundle(path) -> Bundle:
    """Open a bundle, refusing one whose manifest, schema or file hashes do not check out."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise SparsebiasError(f"bundle not found: {path}")
    if not manifest_path.is_file():
        raise SparsebiasError(f"not a bundle (no {MANIFEST}): {path}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SparsebiasError(f"{manifest_path}: unreadable manifest: {e}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise SparsebiasError(f"{manifest_path}: manifest lists no files")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SparsebiasError(
            f"{manifest_path}: schema version {version!r}, this sparsebias reads version {SCHEMA_VERSION}")
    outside = [name for name in manifest["files"] if not (path / name).resolve().is_relative_to(path.resolve())]
    if outside:
        raise SparsebiasError(f"{manifest_path}: file entry {outside[0]!r} points outside the bundle")
    for name, expected in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise SparsebiasError(f"{file}: missing from the bundle")
        if sha256(file) != expected:
            raise SparsebiasError(f"{file}: sha256 does not match the manifest (modified or corrupt)")
    for required in ("model.onnx", "attributes", "architecture", "input"):
        if required not in manifest and required not in manifest["files"]:
            raise SparsebiasError(f"{manifest_path}: missing {required!r}")
    return Bundle(path, manifest)


def update_bundle(bundle: Bundle, files: dict[str, bytes], manifest: dict) -> Bundle:
    """A new version of the bundle with `files` added or replaced and `manifest` keys set; atomic.

    Unchanged files are hard-linked (copied where links are not supported), so adding a
    small mitigation file to a large model costs little.
    """
    with BundleWriter(bundle.path) as writer:
        for name in bundle.manifest["files"]:
            if name not in files:
                target = writer.file(name)
                try:
                    os.link(bundle.path / name, target)
                except OSError:
                    shutil.copy2(bundle.path / name, target)
        for name, data in files.items():
            writer.file(name).write_bytes(data)
        kept = {k: v for k, v in bundle.manifest.items() if k not in ("schema_version", "files")}
        return writer.commit({**kept, **manifest})
