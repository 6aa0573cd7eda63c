"""audit, calibrate, overrides and gate: judge a compressed model against its reference, mitigate, release."""

from __future__ import annotations

import sys
from contextlib import nullcontext

import click

from ..core.errors import SparsebiasError
from .common import TRUSTED_KEY, loaded, names, replay_options, replay_settings, say_signature_dropped


@click.command()
@click.argument("bundle", required=False, type=click.Path(file_okay=False))
@click.option("--reference", default=None, type=click.Path(), help="The dense reference bundle.")
@click.option("--split", default="test", show_default=True, help="Split to audit (val or test).")
@click.option("--identity", "identities", default=None,
              help="Comma-separated identity attributes (default: Male,Young,Chubby,Pale_Skin).")
@click.option("--intersect", default=None, help="Two identities whose intersection forms the groups for the "
              "FairGRAPE group metrics (default: the first two).")
@click.option("--reference-group", default=None,
              help="Group mode: the group whose PIE rate is compared with the rest, COLUMN=GROUP (default race=White).")
@click.option("--labels", type=click.Path(dir_okay=False), help="Files mode: eval labels (CSV/Parquet, id + columns).")
@click.option("--logits", type=click.Path(dir_okay=False), help="Files mode: the model's eval logits.")
@click.option("--reference-logits", type=click.Path(dir_okay=False), help="Files mode: the reference's eval logits.")
@click.option("--train-labels", type=click.Path(dir_okay=False), help="Files mode: training labels (BA direction, TCB).")
@click.option("--val-labels", type=click.Path(dir_okay=False), help="Files mode, optional: validation labels.")
@click.option("--val-logits", type=click.Path(dir_okay=False), help="Files mode, optional: the model's val logits.")
@click.option("--val-reference-logits", type=click.Path(dir_okay=False),
              help="Files mode, optional: the reference's val logits.")
@click.option("--out", "out_dir", default="audit-report", show_default=True, type=click.Path(file_okay=False),
              help="Folder for report.json, report.md, report.html and the plots.")
@replay_options
def audit(bundle, reference, split, identities, intersect, reference_group, labels, logits, reference_logits,
          train_labels, val_labels, val_logits, val_reference_logits, out_dir, replay_data, replay_engine,
          stored_logits):
    """Audit a compressed model against its dense reference for bias.

    Either two bundles, or files of labels and logits from any model (files mode). Each
    bundle's model.onnx is re-run on its val and test images first, and a bundle whose stored
    logits, labels or sparsity are not what its model and data give is refused.
    Bundles that classify groups (FairFace, UTKFace, SynthFaces groups=1) are audited in
    group mode: accuracy, FNR, FPR, Std(dAcc), AP, Std(AP), Std(dAP) per sensitive group,
    PIE rates and per-class-size scores; --identity then names the group columns.

    \b
    Example:
      sparsebias audit exported/resnet18_99 --reference exported/resnet18_dense --out audit/r18_99
      sparsebias audit --labels test.csv --logits pruned.csv --reference-logits dense.csv \\
                       --train-labels train.csv --out audit/mine
      sparsebias audit runs/groups/bundles/fairgrape-s0 --reference runs/groups/bundles/dense-s0 \\
                       --reference-group race=Black --out audit/fairgrape
    """
    from ..auditing import audit as run
    from ..report import audit_summary, write_audit

    if bundle and not reference:
        raise SparsebiasError("--reference: the dense bundle to audit against is required")
    pair = loaded([bundle, reference]) if bundle else (None, None)
    with replay_settings(replay_data, replay_engine, stored_logits) if bundle else nullcontext({}) as replay:
        report = run(*pair, split=split, identities=names(identities), intersect=names(intersect),
                     reference_group=reference_group, labels=labels, logits=logits,
                     reference_logits=reference_logits, train_labels=train_labels, val_labels=val_labels,
                     val_logits=val_logits, val_reference_logits=val_reference_logits, **replay)
    written = write_audit(report, out_dir)
    click.echo("\n".join(audit_summary(report)))
    click.echo(f"wrote {len(written)} files to {out_dir}/ (report.md, report.html, report.json)")


@click.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--split", default="val", show_default=True, help="Split whose logits set the thresholds.")
def calibrate(bundle, split):
    """Set per-attribute thresholds on the validation split and store them in the bundle.

    Each threshold makes the predicted-positive count on validation equal the true one.

    \b
    Example:
      sparsebias calibrate exported/resnet18_99
    """
    from ..auditing import calibrate as run
    from ..bundle import is_signed
    from ..metrics import sigmoid

    found, = loaded([bundle])
    was_signed = is_signed(found)
    updated, thresholds = run(found, split)
    for name, t in zip(updated.attributes, thresholds):
        click.echo(f"  {name:24s} p > {float(sigmoid(t)):.4f}")
    click.echo(f"stored {len(thresholds)} thresholds in {updated.path}/thresholds.json")
    say_signature_dropped(updated.path, was_signed)


@click.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--reference", required=True, type=click.Path(), help="The dense bundle that ranks samples.")
@click.option("--budget", default=0.05, show_default=True, type=click.FloatRange(min=0, max=1, min_open=True),
              help="Share of eval samples overridden per attribute.")
@click.option("--label", type=click.Choice(["true", "dense"]), default="true", show_default=True,
              help="Override with the true label (a human review) or the dense model's.")
@click.option("--split", default="test", show_default=True, help="Split the table is built on.")
@click.option("--identity", "identities", default=None, help="Identities whose dense BA selects attributes.")
@click.option("--data", default=None, help="Data set to hash images from (default: the bundle's).")
def overrides(bundle, reference, budget, label, split, identities, data):
    """Build the uncertainty-ranked override table from the dense model and store it in the bundle.

    \b
    Example:
      sparsebias overrides exported/resnet18_99 --reference exported/resnet18_dense --budget 0.05 --label true
    """
    from ..auditing import overrides as run
    from ..bundle import is_signed

    found, dense = loaded([bundle, reference])
    was_signed = is_signed(found)
    updated, table = run(found, dense, budget=budget, label=label, split=split, identities=names(identities),
                         data=data, echo=click.echo)
    covered = updated.manifest.mitigations["overrides"]["attributes"]
    click.echo(f"{len(table)} override(s) for {len(covered)} attribute(s) with positive dense BA: "
               + ", ".join(covered))
    click.echo(f"stored in {updated.path}/overrides.csv")
    say_signature_dropped(updated.path, was_signed)


@click.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--policy", required=True, type=click.Path(dir_okay=False), help="Gate policy (YAML).")
@click.option("--reference", default=None, type=click.Path(), help="Dense bundle (default: the policy's).")
@TRUSTED_KEY
@replay_options
def gate(bundle, policy, reference, trusted_keys, replay_data, replay_engine, stored_logits):
    """Pass or fail a release: exit 0 when every rule holds, 1 when one fails, 2 on an error.

    The gate judges what the models do: each bundle's model.onnx is re-run on its val and
    test images, and a bundle whose stored logits, labels or sparsity disagree is refused.

    \b
    Example (a CI step):
      sparsebias gate exported/resnet18_99 --policy policies/release.yaml
    """
    from ..policy import gate as run
    from ..report import gate_lines

    with replay_settings(replay_data, replay_engine, stored_logits) as replay:
        result = run(bundle, policy, reference=reference, trusted_keys=trusted_keys, **replay)
    for model in result.report.models.values() if trusted_keys else ():
        click.echo(f"signature of {model['path']}: verified", err=True)
    click.echo("\n".join(gate_lines(result)))
    sys.exit(0 if result.passed else 1)
