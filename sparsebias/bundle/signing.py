"""Signed bundles: an Ed25519 signature over the manifest, which holds every file's sha256.

    sparsebias keygen keys/release            # keys/release (private, 0600) and keys/release.pub
    sparsebias sign exported/resnet18_99 --key keys/release
    sparsebias gate exported/resnet18_99 --policy policies/release.yaml --trusted-key keys/release.pub

The signature lives beside the manifest in `signature.json` (it cannot be one of the
files the manifest lists). A bundle's hashes protect its files only from accidents: whoever
edits a file can rewrite its hash. The signature protects them from people: without the
private key, no edit of any file, the manifest included, keeps it valid. Only keys the
verifier names (`--trusted-key`) are trusted; the public key the signature file carries
is a label, never the key that checks it. A command that writes a new version of a
bundle (calibrate, overrides) cannot renew the signature, so the new version is unsigned
until it is signed again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from ..core.errors import SparsebiasError, check_file
from ..core.files import JSON_READ_ERRORS
from .format import MANIFEST, SIGNATURE, Bundle, load_bundle

ALGORITHM = "ed25519"


def generate_key(path) -> tuple[Path, Path]:
    """A new Ed25519 key pair: PATH (PKCS#8 PEM, readable by its owner only) and PATH.pub."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path, public_path = Path(path), Path(f"{path}.pub")
    for existing in (private_path, public_path):
        if existing.exists():
            raise SparsebiasError(f"{existing} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        private_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as f:
            f.write(private_pem)
        public_path.write_bytes(public_pem)
    except OSError as e:
        private_path.unlink(missing_ok=True)
        raise SparsebiasError(f"cannot write the key pair {private_path}: {e.strerror or e}") from None
    return private_path, public_path


def key_id(public_key) -> str:
    """sha256 of the raw 32-byte public key, first 16 hex digits: names a key in messages."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_bundle(path, key_path) -> dict:
    """Verify the bundle's files, then sign its manifest with the private key; returns the signature record."""
    bundle = load_bundle(path)
    key = _private_key(Path(key_path))
    manifest = (bundle.path / MANIFEST).read_bytes()
    record = {"algorithm": ALGORITHM, "signs": MANIFEST, "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
              "key_id": key_id(key.public_key()),
              "signature": base64.b64encode(key.sign(manifest)).decode()}
    target = bundle.path / SIGNATURE
    tmp = target.with_name(f".{SIGNATURE}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SparsebiasError(f"cannot write {target}: {e.strerror or e}") from None
    return record


def is_signed(bundle: Bundle) -> bool:
    return (bundle.path / SIGNATURE).is_file()


def verify_bundle(path, trusted_keys) -> Bundle:
    """The bundle, loaded (hashes verified) and its manifest's signature checked against the
    trusted public keys; a missing, malformed or foreign signature is refused in one line."""
    from cryptography.exceptions import InvalidSignature

    keys = [_public_key(Path(k)) for k in trusted_keys]
    bundle = load_bundle(getattr(path, "path", path))   # a loaded bundle is re-read: the signature covers the disk
    signature_path = bundle.path / SIGNATURE
    if not signature_path.is_file():
        raise SparsebiasError(f"{bundle.path}: not signed (no {SIGNATURE}); a trusted key was required")
    try:
        record = json.loads(signature_path.read_text())
        signature = base64.b64decode(record["signature"], validate=True)
        algorithm = record["algorithm"]
    except (*JSON_READ_ERRORS, KeyError, TypeError, ValueError):
        raise SparsebiasError(f"{signature_path}: not a signature record") from None
    if algorithm != ALGORITHM:
        raise SparsebiasError(f"{signature_path}: algorithm {algorithm!r}; sparsebias signs with {ALGORITHM}")
    manifest = (bundle.path / MANIFEST).read_bytes()
    for key in keys:
        try:
            key.verify(signature, manifest)
            return bundle
        except InvalidSignature:
            continue
    raise SparsebiasError(f"{signature_path}: the signature does not verify with the trusted key(s) "
                          f"{', '.join(key_id(k) for k in keys)}: the bundle was changed after signing, "
                          "or signed by another key")


def _private_key(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SparsebiasError(f"{path}: the key is encrypted; sparsebias reads unencrypted PKCS#8 keys") from None
    except ValueError:
        raise SparsebiasError(f"{path}: not a PEM private key (make one with `sparsebias keygen`)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SparsebiasError(f"{path}: a {type(key).__name__.removesuffix('PrivateKey').lstrip('_')} key; "
                              "bundles are signed with Ed25519 keys")
    return key


def _public_key(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise SparsebiasError(f"{path}: not a PEM public key (the .pub file `sparsebias keygen` writes)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SparsebiasError(f"{path}: not an Ed25519 public key")
    return key


def _read_key_file(path: Path) -> bytes:
    check_file(path, "key file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SparsebiasError(f"cannot read key file {path}: {e.strerror or e}") from None
    if len(data) > 64 * 1024:
        raise SparsebiasError(f"{path}: too large to be a key file")
    return data
