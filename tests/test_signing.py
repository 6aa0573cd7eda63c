"""Signed bundles: sign, verify with a trusted key, and refuse every tampering in one line."""

import hashlib
import json
import shutil
import stat

import numpy as np
import pytest
from conftest import cli, refused

from sparsebias.bundle import load_bundle


@pytest.fixture
def keys(tmp_path):
    assert cli("keygen", tmp_path / "keys/release").exit_code == 0
    return tmp_path / "keys/release", tmp_path / "keys/release.pub"


@pytest.fixture
def signed(dense_bundle, tmp_path, keys):
    copy = tmp_path / "bundle"
    shutil.copytree(dense_bundle.path, copy)
    result = cli("sign", copy, "--key", keys[0])
    assert result.exit_code == 0 and "signed" in result.output, result.output
    return copy


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path, keys):
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private.read_bytes() and b"BEGIN PUBLIC KEY" in public.read_bytes()
    refused(cli("keygen", private), "exists; refusing to overwrite a key")


def test_a_signed_bundle_verifies_with_its_key(signed, keys):
    result = cli("info", signed, "--trusted-key", keys[1])
    assert result.exit_code == 0, result.output
    record = json.loads((signed / "signature.json").read_text())
    assert record["algorithm"] == "ed25519"
    assert record["manifest_sha256"] == hashlib.sha256((signed / "manifest.json").read_bytes()).hexdigest()
    assert "present (not checked" in cli("info", signed).output


def test_logits_swapped_and_their_hash_rewritten_fail_the_signature(signed, keys):
    split = signed / "splits/test.npz"
    with np.load(split) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["logits"] = arrays["logits"] + 1.0
    np.savez_compressed(split, **arrays)
    manifest = json.loads((signed / "manifest.json").read_text())
    manifest["files"]["splits/test.npz"] = hashlib.sha256(split.read_bytes()).hexdigest()
    (signed / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    load_bundle(signed)   # the hashes alone are fooled ...
    refused(cli("info", signed, "--trusted-key", keys[1]), "does not verify with the trusted key")   # ... not this


def test_missing_forged_and_garbled_signatures_are_refused(signed, keys, tmp_path):
    assert cli("keygen", tmp_path / "other").exit_code == 0
    refused(cli("info", signed, "--trusted-key", tmp_path / "other.pub"), "does not verify")
    (signed / "signature.json").write_text("{\"algorithm\": \"ed25519\", \"signature\": \"%%%\"}")
    refused(cli("info", signed, "--trusted-key", keys[1]), "not a signature record")
    assert cli("sign", signed, "--key", tmp_path / "other").exit_code == 0   # re-signed by a stranger
    refused(cli("info", signed, "--trusted-key", keys[1]), "or signed by another key")
    assert cli("info", signed, "--trusted-key", keys[1], "--trusted-key", tmp_path / "other.pub").exit_code == 0
    (signed / "signature.json").unlink()
    refused(cli("predict", signed, tmp_path, "--trusted-key", keys[1]), "not signed (no signature.json)")


def test_the_gate_refuses_an_unsigned_reference(signed, keys, dense_bundle, repo):
    refused(cli("gate", signed, "--policy", repo / "policies/release.yaml", "--reference", dense_bundle.path,
                "--trusted-key", keys[1]),
            f"{dense_bundle.path}: not signed")


def test_a_mitigation_drops_the_signature_and_says_so(signed, keys):
    result = cli("calibrate", signed)
    assert result.exit_code == 0, result.output
    assert "was signed; this new version is not" in result.output
    assert not (signed / "signature.json").exists()
    refused(cli("info", signed, "--trusted-key", keys[1]), "not signed")


def test_keys_of_the_wrong_kind_are_refused(signed, keys, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    refused(cli("sign", signed, "--key", rsa_key), "bundles are signed with Ed25519 keys")
    refused(cli("sign", signed, "--key", keys[1]), "not a PEM private key")
    refused(cli("info", signed, "--trusted-key", keys[0]), "not a PEM public key")
    refused(cli("sign", signed, "--key", tmp_path / "nothing"), "key file not found")
