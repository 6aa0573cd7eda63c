"""info, keygen and sign: look into a bundle, and sign it for release."""

from __future__ import annotations

from pathlib import Path

import click

from .common import TRUSTED_KEY, loaded


@click.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--layers", is_flag=True, help="Also list every layer's sparsity.")
@TRUSTED_KEY
def info(bundle, layers, trusted_keys):
    """Verify a bundle (hashes, schema, its sparsity against model.onnx, and its signature with
    --trusted-key) and describe it.

    \b
    Example:
      sparsebias info exported/resnet18_99 --layers
      sparsebias info exported/resnet18_99 --trusted-key keys/release.pub
    """
    from ..bundle import is_signed
    from ..bundle.flops import check_claimed_sparsity
    from ..report import bundle_summary

    found, = loaded([bundle], trusted_keys)
    check_claimed_sparsity(found)
    click.echo(bundle_summary(found, per_layer=layers))
    if not trusted_keys:
        click.echo("signature    " + ("present (not checked: give --trusted-key)" if is_signed(found) else "none"))
    if extra := found.unlisted_files():
        click.echo(f"not listed   {len(extra)} file(s) the manifest does not list, so not the bundle's and never read: "
                   + ", ".join(extra[:5]) + (", ..." if len(extra) > 5 else ""))


@click.command()
@click.argument("path", type=click.Path(dir_okay=False))
def keygen(path):
    """Make an Ed25519 key pair for signing bundles: PATH (private, keep it secret) and PATH.pub.

    \b
    Example:
      sparsebias keygen keys/release
    """
    from ..bundle import generate_key

    private, public = generate_key(path)
    click.echo(f"private key  {private} (readable by you only; sign with it)")
    click.echo(f"public key   {public} (give it to whoever verifies: --trusted-key)")


@click.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False), help="Ed25519 private key (PEM).")
def sign(bundle, key_path):
    """Sign a bundle's manifest, which holds the sha256 of every file, after verifying them.

    gate, info and predict with --trusted-key then refuse the bundle if any file, the
    manifest included, changes, or if the signature is missing or made by another key.

    \b
    Example:
      sparsebias sign exported/resnet18_99 --key keys/release
    """
    from ..bundle import SIGNATURE, sign_bundle

    record = sign_bundle(bundle, key_path)
    click.echo(f"signed {bundle} with key {record['key_id']} ({Path(bundle) / SIGNATURE})")
