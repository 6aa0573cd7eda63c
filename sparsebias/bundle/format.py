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

import fcntl
import hashlib
import json
import math
import os
import shutil
import zipfile
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import SparsebiasError, first_line
from ..core.files import JSON_READ_ERRORS, json_default
from .manifest import Manifest

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"   # written by `sign` beside the manifest, which cannot list it


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest

    def __post_init__(self):
        if not isinstance(self.manifest, Manifest):
            object.__setattr__(self, "manifest", Manifest(self.manifest))

    @property
    def attributes(self) -> list[str]:
        return self.manifest.attributes

    def require_binary(self, command: str) -> None:
        """Thresholds, override tables and gate policies are per binary attribute."""
        if not self.manifest.binary:
            raise SparsebiasError(f"{self.path}: {command} works on bundles of binary attributes; this one classifies "
                                  f"{', '.join(self.attributes)} (class heads): use `sparsebias audit` in group mode")

    def file(self, name: str) -> Path:
        """A file the manifest lists (so its hash was checked); anything else in the folder is not the bundle's."""
        if not self.has(name):
            raise SparsebiasError(f"bundle {self.path}: its manifest lists no {name}")
        return self.path / name

    def has(self, name: str) -> bool:
        return name in self.manifest["files"]

    def unlisted_files(self) -> list[str]:
        """Files in the folder that are not the bundle's (neither listed, nor its manifest or
        signature): nothing reads them, and a person looking at the folder should know that."""
        own = {MANIFEST, SIGNATURE, *self.manifest["files"]}
        return sorted(name for p in self.path.rglob("*")
                      if (p.is_file() or p.is_symlink()) and (name := p.relative_to(self.path).as_posix()) not in own)

    def attribute_labels(self, split_data: dict) -> np.ndarray:
        """The labels of the model's own attributes, in output order, from a `split()` result."""
        names = self.manifest.label_names
        return split_data["labels"][:, [names.index(a) for a in self.attributes]]

    def split(self, name: str) -> dict[str, np.ndarray]:
        """ids, labels (all label names) and, for val and test, logits (trained attributes)."""
        if not self.has(f"splits/{name}.npz"):
            raise SparsebiasError(f"bundle {self.path} has no split {name!r}")
        path = self.file(f"splits/{name}.npz")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise SparsebiasError(f"{path}: unreadable split ({first_line(e)})") from None
        self._check_split(arrays, path)
        return arrays

    def _check_split(self, arrays: dict, path: Path) -> None:
        """Shapes and values the audit relies on: one id per row, a label per label name, finite logits."""
        ids, labels = arrays.get("ids"), arrays.get("labels")
        if ids is None or labels is None or ids.ndim != 1 or labels.ndim != 2 or len(labels) != len(ids):
            raise SparsebiasError(f"{path}: a split holds 'ids' (n,) and 'labels' (n, label names)")
        names, classes = self.manifest["label_names"], self.manifest.get("label_classes")
        if labels.shape[1] != len(names) or labels.dtype.kind not in "iub":
            raise SparsebiasError(f"{path}: 'labels' must be whole numbers, one column per label name ({len(names)})")
        limits = [2] * len(names) if classes is None else [len(classes[n]) for n in names]
        if len(labels) and ((labels < 0).any() or (labels >= np.array(limits)).any()):
            raise SparsebiasError(f"{path}: a label is outside its classes (0/1 for binary attributes)")
        logits = arrays.get("logits")
        if logits is not None and (logits.ndim != 2 or len(logits) != len(ids) or logits.dtype.kind != "f"):
            raise SparsebiasError(f"{path}: 'logits' must be floats, one row per id")
        backdoor = arrays.get("backdoor")
        if backdoor is not None and (backdoor.shape != ids.shape or not np.isin(backdoor, (0, 1)).all()):
            raise SparsebiasError(f"{path}: 'backdoor' must be 0/1, one per id")


@contextmanager
def bundle_lock(path: Path):
    """Held by whoever writes the bundle `path` (a compress of that name, a mitigation): a second
    writer is refused in one line. The lock file, beside the bundle, goes when released, and so do
    the folders made for it that nothing was written to (a run refused at its data leaves none)."""
    lock = Path(path).with_name(f".{Path(path).name}.lock")
    made = [folder for folder in (lock.parent, *lock.parent.parents) if not folder.exists()]
    lock.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(handle.fileno()).st_ino != os.stat(lock).st_ino:  # released and removed while we opened it
            raise BlockingIOError
    except (BlockingIOError, FileNotFoundError):
        handle.close()
        raise SparsebiasError(f"{path} is being written by another process (it holds {lock}); wait for it to "
                              "finish, or write elsewhere") from None
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        handle.close()
        for folder in made:   # deepest first
            with suppress(OSError):
                folder.rmdir()


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
        if isinstance(exc, OSError):   # a full disk, a quota: name the bundle and its file, not the staging folder
            name = Path(exc.filename).name if exc.filename else "its files"
            raise SparsebiasError(f"cannot write the bundle {self.path} ({name}): {exc.strerror or first_line(exc)}; "
                                  "nothing was kept") from None
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
    """Open a bundle, refusing one whose manifest, schema or file hashes do not check out.

    >>> load_bundle("exported/resnet18_99").manifest.sparsity  # doctest: +SKIP
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise SparsebiasError(f"bundle not found: {path}")
    if not manifest_path.is_file():
        raise SparsebiasError(f"not a bundle (no {MANIFEST}): {path}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except JSON_READ_ERRORS as e:
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
    if "model.onnx" not in manifest["files"]:
        raise SparsebiasError(f"{manifest_path}: lists no model.onnx")
    _check_manifest(manifest, manifest_path)
    return Bundle(path, manifest)


def _names(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(v) -> bool:
    return isinstance(v, dict) and all(_number(x) for x in v.values())


# What every reader of a manifest relies on; a manifest is the shipper's text, so it is checked like input.
MANIFEST_SCHEMA = {
    "architecture": lambda v: isinstance(v, str),
    "attributes": lambda v: _names(v) and len(v) > 0 and len(set(v)) == len(v),
    "label_names": lambda v: _names(v) and len(set(v)) == len(v),
    "identities": _names,
    "input": lambda v: isinstance(v, dict) and all(_number(x) for k in ("mean", "std") for x in v.get(k) or [None])
    and len(v["mean"]) == len(v["std"]) == 3 and all(x > 0 for x in v["std"]) and isinstance(v.get("shape"), list)
    and len(v["shape"]) == 4 and all(isinstance(d, int) and not isinstance(d, bool) and 0 < d for d in v["shape"][1:]),
    "output": lambda v: isinstance(v, dict),
    "data": lambda v: isinstance(v, dict) and isinstance(v.get("spec"), str),
    "recipe": lambda v: isinstance(v, dict) and isinstance(v.get("source"), str),
    "training": lambda v: isinstance(v, dict) and all(_number(v.get(k)) for k in ("epochs", "best_epoch", "seconds"))
    and isinstance(v.get("seed"), int),
    "sparsity": lambda v: isinstance(v, dict) and _number(v.get("overall")) and _numbers(v.get("per_layer")),
    "metrics": lambda v: isinstance(v, dict) and all(  # NaN where a split has a single class
        isinstance(x, dict) and {"accuracy", "auc"} <= set(x)
        and all(isinstance(y, (int, float)) and not isinstance(y, bool) for y in x.values()) for x in v.values()),
    "export": lambda v: isinstance(v, dict) and _number(v.get("max_abs_diff_vs_torch")),
}


OPTIONAL_SCHEMA = {  # bundles of sparsebias 0.1.0 have no FLOPs; only mitigated ones have mitigations
    "flops": lambda v: isinstance(v, dict) and all(
        _number(v.get(k)) for k in ("dense_macs", "sparse_macs", "reduction", "weight_sparsity")),
    "mitigations": lambda v: isinstance(v, dict) and set(v) <= {"thresholds", "overrides"}
    and (isinstance(v.get("thresholds", {}).get("split", ""), str))
    and ("overrides" not in v or (isinstance(v["overrides"].get("label"), str) and _number(v["overrides"].get("rows"))
                                  and _number(v["overrides"].get("budget"))
                                  and isinstance(v["overrides"].get("attributes"), (dict, list)))),
}


def _check_manifest(m: dict, where: Path) -> None:
    """Types and cross-references, so that no command trips over a manifest someone edited."""
    for key, valid in {**MANIFEST_SCHEMA, **OPTIONAL_SCHEMA}.items():
        if key in OPTIONAL_SCHEMA and key not in m:
            continue
        try:
            ok = key in m and valid(m[key])
        except (TypeError, KeyError, AttributeError):
            ok = False
        if not ok:
            raise SparsebiasError(f"{where}: {key!r} is missing or malformed")
    classes = m.get("label_classes")
    if classes is not None and not (isinstance(classes, dict) and all(
            n in classes and _names(classes[n]) and len(classes[n]) >= 2 for n in m["label_names"])):
        raise SparsebiasError(f"{where}: 'label_classes' must list two or more classes per label name")
    outside = [a for a in m["attributes"] + m["identities"] if a not in m["label_names"]]
    if outside:
        raise SparsebiasError(f"{where}: {outside[0]!r} is not one of the label names")
    heads = m["output"].get("heads")
    if heads is not None and not (isinstance(heads, list) and [h.get("name") if isinstance(h, dict) else None
                                                                for h in heads] == m["attributes"]
                                  and all(_names(h.get("classes")) for h in heads)):
        raise SparsebiasError(f"{where}: 'output' heads must name the attributes with their classes")
    if (heads is None) != (classes is None):
        raise SparsebiasError(f"{where}: class heads and label classes go together")


def as_bundle(bundle_or_path) -> Bundle:
    """A bundle as given, or loaded (and verified) from its folder."""
    return bundle_or_path if isinstance(bundle_or_path, Bundle) else load_bundle(bundle_or_path)


def update_bundle(bundle: Bundle, files: dict[str, bytes], manifest: dict) -> Bundle:
    """A new version of the bundle with `files` added or replaced and `manifest` keys set; atomic.

    Unchanged files are hard-linked (copied where links are not supported), so adding a
    small mitigation file to a large model costs little. Another process writing the same
    bundle (a compress of that name) is refused.
    """
    with bundle_lock(bundle.path), BundleWriter(bundle.path) as writer:
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
