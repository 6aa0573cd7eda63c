"""The command line: one thin command per verb over the library."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from pathlib import Path

import click

from .errors import SparsebiasError, first_line

EXIT_USER_ERROR = 2


class _Group(click.Group):
    """Turns a user error into one line on stderr and exit status 2, never a traceback."""

    def invoke(self, ctx):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, functools.partial(_terminated, os.getpid()))
        try:
            return super().invoke(ctx)
        except SparsebiasError as e:
            click.echo("error: " + " ".join(str(e).strip().splitlines()), err=True)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt as e:
            click.echo("interrupted; nothing half-written was kept (compress: rerun with --resume; "
                       "sweep: rerun the same command)", err=True)
            sys.exit(128 + (e.args[0] if e.args and isinstance(e.args[0], int) else signal.SIGINT))
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except OSError as e:  # a read-only or full disk, a folder where a file should be: name it
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"error: {where}{e.strerror or first_line(e)}; nothing half-written was kept", err=True)
            sys.exit(EXIT_USER_ERROR)
        except Exception as e:
            # Exit 1 means "the gate failed" or "predict skipped images"; a crash must never read as either.
            if os.environ.get("SPARSEBIAS_DEBUG"):
                raise
            click.echo(f"error: unexpected {type(e).__name__}: {first_line(e)} (a sparsebias bug, or input it "
                       "failed to check: please report it; SPARSEBIAS_DEBUG=1 shows the traceback)", err=True)
            sys.exit(EXIT_USER_ERROR)


def _terminated(main_pid, signum, frame):
    """SIGTERM (a scheduler's pre-emption, `kill`) unwinds like Ctrl-C: staged files are removed,
    and an interrupted compress resumes from its last completed epoch. Forked workers (image
    decoding) die as they would have: their pool's parent cleans up."""
    if os.getpid() != main_pid:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    raise KeyboardInterrupt(signum)


TRUSTED_KEY = click.option(
    "--trusted-key", "trusted_keys", multiple=True, type=click.Path(dir_okay=False),
    help="Ed25519 public key (PEM); the bundle (and a reference) must be signed by it. Repeatable.")


def _replay_options(command):
    """--data, --engine and --stored-logits: how audit and gate check what a bundle's model does."""
    for option in reversed([
        click.option("--data", "replay_data", default=None,
                     help="Data set to re-run the models on (as compress --data; default: each manifest's own)."),
        click.option("--engine", "replay_engine", default="onnxruntime", show_default=True,
                     help="Engine that re-runs model.onnx on the judged images (onnxruntime is on every machine)."),
        click.option("--stored-logits", is_flag=True,
                     help="Judge the logits the bundles store without re-running them (where the data is not at "
                          "hand); the bundles' own claims, and the output says so."),
    ]):
        command = option(command)
    return command


@click.group(cls=_Group)
@click.version_option(package_name="sparsebias")
def main():
    """Compress vision classifiers, run them sparse, and audit them for bias."""


@main.command()
@click.option("--recipe", "recipe", required=True, type=click.Path(dir_okay=False),
              help="SparseML recipe (YAML, or Markdown with YAML front matter).")
@click.option("--data", default=None, help="synthfaces (default), synthfaces:n=..,size=..,seed=.., or celeba:PATH.")
@click.option("--attributes", default=None, help="Comma-separated attributes to train (default: all).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe variable or run setting, e.g. --set num_epochs=3 --set arch=mobilenet_v2.")
@click.option("--from", "from_path", default=None, type=click.Path(exists=False),
              help="Start from a trained model (GMP-PT): a dense bundle folder or a checkpoint file.")
@click.option("--name", default=None, help="Bundle name (default: the recipe's file name).")
@click.option("--out", "out_dir", default="exported", show_default=True, type=click.Path(file_okay=False),
              help="Folder the bundle is written into.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for initialisation and data order.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last completed epoch.")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when present), cpu, cuda or cuda:N; under torchrun each process takes its own GPU.")
@click.option("--precision", default=None, type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              help="Mixed precision (autocast) for training; default: the recipe's precision, else auto.")
def compress(recipe, data, attributes, overrides, from_path, name, out_dir, seed, resume, device, precision):
    """Train and prune a model as a SparseML recipe says, then export a verified bundle.

    \b
    Example:
      sparsebias compress --recipe recipes/resnet18_99.yaml
      sparsebias compress --recipe recipes/resnet18_gmp_pt_95.yaml --from exported/resnet18_dense
      sparsebias compress --recipe recipes/resnet18_dense.yaml --data celeba:~/data/celeba --attributes Smiling
      sparsebias compress --recipe recipes/resnet18_99.yaml --device cuda --precision bf16
      torchrun --nproc-per-node 4 -m sparsebias compress --recipe recipes/resnet18_99.yaml
    """
    from .compress import compress as run
    from .recipes import parse_overrides

    bundle = run(recipe, data=data, attributes=_names(attributes), overrides=parse_overrides(overrides), name=name,
                 out_dir=out_dir, from_path=from_path, seed=seed, resume=resume, device=device, precision=precision,
                 echo=click.echo)
    if bundle is not None:  # under torchrun, rank 0 writes the bundle and speaks
        click.echo(_summary(bundle))


@main.command()
@click.argument("bundle", required=False, type=click.Path(file_okay=False))
@click.option("--recipe", default="recipes/resnet18_dense.yaml", show_default=True, type=click.Path(dir_okay=False),
              help="Without BUNDLE: the dense recipe to train first.")
@click.option("--data", default=None, help="Without BUNDLE: the data set to train on (default synthfaces).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Without BUNDLE: recipe overrides.")
@click.option("--seed", default=0, show_default=True, type=int, help="Without BUNDLE: the training seed.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["val", "test"]))
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Folder for fidelity.json, .md and .png (default: BUNDLE/../NAME-fidelity).")
def fidelity(bundle, recipe, data, overrides, seed, split, out_dir):
    """How CelebA-like a dense model is: its statistics beside the paper's CelebA model.

    Takes a dense bundle, or trains one with --recipe first, and prints mean accuracy against
    majority-class accuracy, AUC and its spread over attributes, TCB, ECE, uncertainty,
    interdependence and the attributes with the highest bias amplification per identity,
    each beside CelebA's (Iofinova et al., CVPR 2023, Table J.1), and the targets met.

    \b
    Example:
      sparsebias fidelity exported/resnet18_dense
      sparsebias fidelity --recipe recipes/resnet18_dense.yaml --data synthfaces:train=8000
    """
    from .fidelity import fidelity as measure
    from .report.fidelity import fidelity_markdown, write_fidelity

    if bundle is None:
        from .compress import compress as run
        from .recipes import parse_overrides

        bundle = run(recipe, data=data, overrides=parse_overrides(overrides), name=f"{Path(recipe).stem}-fidelity",
                     seed=seed, echo=click.echo).path
    result = measure(bundle, split=split)
    out_dir = Path(out_dir) if out_dir else Path(bundle).parent / f"{Path(bundle).name}-fidelity"
    write_fidelity(result, out_dir)
    click.echo(fidelity_markdown(result))
    click.echo(f"written to {out_dir}/fidelity.{{json,md,png}}")


@main.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--layers", is_flag=True, help="Also list every layer's sparsity.")
@TRUSTED_KEY
def info(bundle, layers, trusted_keys):
    """Verify a bundle (hashes, schema, and its signature with --trusted-key) and describe it.

    \b
    Example:
      sparsebias info exported/resnet18_99 --layers
      sparsebias info exported/resnet18_99 --trusted-key keys/release.pub
    """
    from .signing import is_signed

    loaded, = _loaded([bundle], trusted_keys)
    click.echo(_summary(loaded, per_layer=layers))
    if not trusted_keys:
        click.echo("signature    " + ("present (not checked: give --trusted-key)" if is_signed(loaded) else "none"))


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
def keygen(path):
    """Make an Ed25519 key pair for signing bundles: PATH (private, keep it secret) and PATH.pub.

    \b
    Example:
      sparsebias keygen keys/release
    """
    from .signing import generate_key

    private, public = generate_key(path)
    click.echo(f"private key  {private} (readable by you only; sign with it)")
    click.echo(f"public key   {public} (give it to whoever verifies: --trusted-key)")


@main.command()
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
    from .signing import SIGNATURE, sign_bundle

    record = sign_bundle(bundle, key_path)
    click.echo(f"signed {bundle} with key {record['key_id']} ({Path(bundle) / SIGNATURE})")


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--engine", "engines", default="auto,onnxruntime", show_default=True,
              help="Comma-separated engines; 'auto': DeepSparse where installed, else onnxruntime; "
                   "'available': every engine that runs here.")
@click.option("--batch-size", "batch_sizes", default="1,16", show_default=True, help="Comma-separated batch sizes.")
@click.option("--cores", type=click.IntRange(min=1), default=None, help="CPU cores to use (default: all physical).")
@click.option("--reference", default=None, type=click.Path(),
              help="Dense bundle to compute speedups against (default: each model on onnxruntime).")
@click.option("--warmup", default=2.0, show_default=True, type=click.FloatRange(min=0), help="Seconds of warm-up.")
@click.option("--duration", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds measured per model, engine and batch size.")
@click.option("--profile", is_flag=True, help="Also record DeepSparse's per-layer timings.")
@click.option("--out", "out_dir", default="bench-report", show_default=True, type=click.Path(file_okay=False),
              help="Folder for bench.json, bench.md and bench.png.")
def bench(models, engines, batch_sizes, cores, reference, warmup, duration, profile, out_dir):
    """Measure items/s and latency of bundles (or ONNX files) on several engines.

    \b
    Example:
      sparsebias bench exported/resnet18_99 --reference exported/resnet18_dense --batch-size 1,16,64
      sparsebias bench model.onnx --engine available --cores 4
    """
    from tqdm import tqdm

    from .bench import Settings, run_bench
    from .engines import parse_engines, physical_cores
    from .report.bench import results_table, write_bench_report

    settings = Settings(engines=parse_engines(engines), batch_sizes=_int_list(batch_sizes, "--batch-size"),
                        cores=cores or physical_cores(), warmup_s=warmup, duration_s=duration, profile=profile)
    with tqdm(total=1, unit="run", leave=False) as bar:
        def progress(done, total, what):
            bar.total = total
            bar.n = done
            bar.set_description(what)
            bar.refresh()
        report = run_bench(models, settings, reference=reference, progress=progress)
    click.echo(results_table(report))
    disagree = [a for a in report["agreement"] if not a["agrees"]]
    for a in disagree:
        click.echo(f"warning: {a['engine']} differs from onnxruntime by {a['max_abs_diff']:.2e} on {a['model']}",
                   err=True)
    written = write_bench_report(report, out_dir)
    click.echo("wrote " + ", ".join(map(str, written)))


@main.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--engine", default="auto", show_default=True,
              help="Engine to run the model on; auto: DeepSparse where installed, else onnxruntime.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--cores", type=click.IntRange(min=1), default=None, help="CPU cores to use (default: all physical).")
@click.option("--out", "out_file", default="-", show_default=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="CSV file to write ('-': standard output).")
@TRUSTED_KEY
def predict(bundle, paths, engine, batch_size, cores, out_file, trusted_keys):
    """Predict every attribute for images (files or folders) and write a CSV.

    Exit status 1 when some images could not be read (each is named on stderr; the rest
    are in the CSV).

    \b
    Example:
      sparsebias predict exported/resnet18_99 photos/ --out predictions.csv
    """
    from tqdm import tqdm

    from .predict import predict as run, predictions_csv
    from .report.files import write_atomic

    _loaded([bundle], trusted_keys)   # refused here, before any image is read

    with tqdm(total=0, unit="img", leave=False, disable=out_file == "-") as bar:
        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)
        result = run(bundle, paths, engine=engine, batch_size=batch_size, cores=cores, progress=progress)
    for path, reason in result.unreadable:
        click.echo(f"skipped {path}: {reason}", err=True)
    text = predictions_csv(result)
    if out_file == "-":
        click.echo(text, nl=False)
    else:
        write_atomic(out_file, text)
        click.echo(f"wrote {len(result.paths)} prediction(s) to {out_file} ({result.decided_by})", err=True)
    if result.unreadable:
        click.echo(f"error: {len(result.unreadable)} image(s) could not be read", err=True)
        sys.exit(1)


@main.command()
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
@_replay_options
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
    from .audit import audit as run, inputs_from_bundles, inputs_from_files
    from .report.audit import summary_lines, write_audit_report
    from .tasks import Outputs

    names = _names(identities)
    pair = _names(intersect)
    files = dict(labels=labels, logits=logits, reference_logits=reference_logits, train_labels=train_labels)
    if bundle:
        if not reference:
            raise SparsebiasError("--reference: the dense bundle to audit against is required")
        if any(files.values()):
            raise SparsebiasError("give either a bundle or --labels/--logits files, not both")
        judged, judged_reference = _judged(_loaded([bundle, reference]), replay_data, replay_engine, stored_logits)
        if not Outputs.from_manifest(judged.manifest).binary:
            return _group_audit(judged, judged_reference, split, names, reference_group, out_dir)
        inputs = inputs_from_bundles(judged, judged_reference, split=split, identities=names, intersect=pair)
    else:
        missing = [f"--{k.replace('_', '-')}" for k, v in files.items() if not v]
        if missing:
            raise SparsebiasError(f"give a bundle, or files: missing {', '.join(missing)}")
        inputs = inputs_from_files(**files, val_labels=val_labels, val_logits=val_logits,
                                   val_reference_logits=val_reference_logits, identities=names, intersect=pair,
                                   split=split)
    report = run(inputs)
    written = write_audit_report(report, out_dir)
    click.echo("\n".join(summary_lines(report)))
    click.echo(f"wrote {len(written)} files to {out_dir}/ (report.md, report.html, report.json)")


def _group_audit(bundle, reference, split, sensitive, reference_group, out_dir):
    from .group_audit import group_audit, group_inputs_from_bundles
    from .report.groups import summary_lines, write_group_report

    report = group_audit(group_inputs_from_bundles(bundle, reference, split=split, sensitive=sensitive,
                                                   reference_group=reference_group))
    written = write_group_report(report, out_dir)
    click.echo("\n".join(summary_lines(report)))
    click.echo(f"wrote {len(written)} files to {out_dir}/ (report.md, report.html, report.json)")


@main.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--split", default="val", show_default=True, help="Split whose logits set the thresholds.")
def calibrate(bundle, split):
    """Set per-attribute thresholds on the validation split and store them in the bundle.

    Each threshold makes the predicted-positive count on validation equal the true one.

    \b
    Example:
      sparsebias calibrate exported/resnet18_99
    """
    from .metrics import sigmoid
    from .mitigate.thresholds import calibrate_bundle

    was_signed = _signed(bundle)
    updated, thresholds = calibrate_bundle(bundle, split)
    for name, t in zip(updated.attributes, thresholds):
        click.echo(f"  {name:24s} p > {float(sigmoid(t)):.4f}")
    click.echo(f"stored {len(thresholds)} thresholds in {updated.path}/thresholds.json")
    _say_signature_dropped(updated.path, was_signed)


@main.command()
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
    from .mitigate.overrides import add_overrides_to_bundle

    was_signed = _signed(bundle)
    updated, table = add_overrides_to_bundle(bundle, reference, budget=budget, label=label, split=split,
                                             identities=_names(identities), data=data, echo=click.echo)
    covered = updated.manifest["mitigations"]["overrides"]["attributes"]
    click.echo(f"{len(table)} override(s) for {len(covered)} attribute(s) with positive dense BA: "
               + ", ".join(covered))
    click.echo(f"stored in {updated.path}/overrides.csv")
    _say_signature_dropped(updated.path, was_signed)


@main.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--policy", required=True, type=click.Path(dir_okay=False), help="Gate policy (YAML).")
@click.option("--reference", default=None, type=click.Path(), help="Dense bundle (default: the policy's).")
@TRUSTED_KEY
@_replay_options
def gate(bundle, policy, reference, trusted_keys, replay_data, replay_engine, stored_logits):
    """Pass or fail a release: exit 0 when every rule holds, 1 when one fails, 2 on an error.

    The gate judges what the models do: each bundle's model.onnx is re-run on its val and
    test images, and a bundle whose stored logits, labels or sparsity disagree is refused.

    \b
    Example (a CI step):
      sparsebias gate exported/resnet18_99 --policy policies/release.yaml
    """
    from .audit import audit as run, inputs_from_bundles
    from .gate import evaluate, load_policy
    from .report.audit import logits_lines
    from .report.files import markdown_table

    rules = load_policy(policy)
    reference = reference or rules.reference
    if not reference:
        raise SparsebiasError(f"no reference: give --reference or set 'reference:' in {policy}")
    # the gate judges one split at p > 0.5 or as deployed; validation logits are not used
    judged = _judged(_loaded([bundle, reference], trusted_keys), replay_data, replay_engine, stored_logits, splits=(rules.split,))
    report = run(inputs_from_bundles(*judged, split=rules.split, identities=rules.identities))
    outcomes = evaluate(report, rules)
    rows = [[o.rule.describe(), o.identity or "-", _num(o.value), _num(o.reference) if o.reference is not None
             and o.value is not None else "-", "pass" if o.passed else "FAIL",
             ", ".join(o.breaking[:6]) + (" ..." if len(o.breaking) > 6 else "")] for o in outcomes]
    click.echo(markdown_table(["rule", "identity", "value", "reference", "result", "attributes over the limit"], rows))
    failed = [o for o in outcomes if not o.passed]
    views = "as deployed (bundle mitigations applied)" if rules.mitigations else "at p > 0.5"
    click.echo("\n".join(logits_lines(report["models"])))
    judged_on = "the logits the bundles store (--stored-logits: not re-run)" if stored_logits else \
        "what their models compute on the data"
    click.echo(f"{len(outcomes) - len(failed)} of {len(outcomes)} checks pass; models judged {views}, on {judged_on}")
    sys.exit(1 if failed else 0)


@main.command()
@click.option("--recipes", "recipes", multiple=True, required=True,
              help="Recipe files or glob patterns (quote them); repeatable.")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1), help="Seeds 0..N-1 per recipe.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="The sweep's folder.")
@click.option("--quick", is_flag=True,
              help="7 epochs instead of 16: the resnet18 ladder with 2 seeds in about 45 min on 2 cores.")
@click.option("--data", default=None, help="Data set for every run (as compress --data).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a setting for every run.")
@click.option("--attributes", default=None,
              help="Labels of the joint runs (comma-separated; default every label), e.g. gender,race.")
@click.option("--single", default=None, help="Also train each of these attributes alone (comma-separated).")
@click.option("--no-joint", is_flag=True, help="Skip joint training (with --single: single-attribute runs only).")
@click.option("--from-dense", is_flag=True, help="Start pruning recipes from the dense run of their seed (GMP-PT).")
@click.option("--identity", "identities", default=None,
              help="Identities to audit (comma-separated; 'backdoor' for a backdoored data set).")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="Runs in parallel here; with GPUs, each run gets one (round robin).")
@click.option("--ray", "ray_address", default=None, help="Run each job as a task on this Ray cluster ('auto', host:port).")
@click.option("--gpus-per-run", default=None, type=click.FloatRange(min=0),
              help="GPUs each Ray task reserves and trains on (default: 1 if the cluster has GPUs, else 0).")
@click.option("--no-speed", is_flag=True, help="Skip the items/s measurements of the study.")
def sweep(recipes, seeds, out_dir, quick, data, overrides, attributes, single, no_joint, from_dense, identities, jobs,
          ray_address, gpus_per_run, no_speed):
    """Run recipes x seeds through compress (restartable), audit every run, and write the study.

    Finished runs are skipped and interrupted ones resumed, so the same command continues
    a sweep. The study (OUT/study/study.md, PNG figures) is rebuilt from all finished runs;
    per-run audit reports are in OUT/audits/. Exit status 1 when a run failed.

    \b
    Example:
      sparsebias sweep --recipes 'recipes/resnet18_[0-9d]*.yaml' --seeds 2 --quick --out runs/ladder
      sparsebias sweep --recipes recipes/resnet18_dense.yaml --recipes recipes/resnet18_99.yaml \\
          --single Smiling,Big_Nose --no-joint --seeds 2 --out runs/single
      sparsebias sweep --recipes 'recipes/groups/*.yaml' --attributes gender,race --seeds 1 --out runs/groups
    """
    from tqdm import tqdm

    from .recipes import parse_overrides
    from .report.study import write_study_report
    from .study import run_study
    from .sweep import plan, run_sweep

    planned = plan(recipes, seeds, single=_names(single) or (), joint=not no_joint, quick=quick, data=data,
                   overrides=parse_overrides(overrides), from_dense=from_dense, attributes=_names(attributes))
    with tqdm(total=len(planned), unit="run", leave=False) as bar:
        def progress(done, total, name):
            bar.total = total
            bar.n = done
            bar.set_description(name)
            bar.refresh()
        if gpus_per_run is not None and not ray_address:
            raise SparsebiasError("--gpus-per-run is for --ray; a local sweep gives each of its --jobs a GPU")
        failed = run_sweep(planned, out_dir, workers=jobs, ray_address=ray_address, gpus_per_run=gpus_per_run,
                           echo=tqdm.write, progress=progress)
    study = run_study(out_dir, identities=_names(identities), speed=not no_speed, echo=click.echo)
    written = write_study_report(study, Path(out_dir) / "study")
    click.echo(f"study of {len(study['runs'])} run(s): {written[-1]}")
    if failed:
        click.echo(f"error: {len(failed)} run(s) failed: {', '.join(failed)} (logs in {out_dir}/logs)", err=True)
        sys.exit(1)


@main.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--reference", default=None, type=click.Path(file_okay=False),
              help="The dense reference bundle (for CIEs and PIEs).")
@click.option("--data", default=None, help="Where the images are (as compress --data; default: the bundle's data set).")
@click.option("--split", default="test", show_default=True, help="Split to look at (val or test).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback exposes your data to the network.")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="Port; 0 picks a free one.")
def view(bundle, reference, data, split, host, port):
    """Look at the examples behind the numbers in a local web page.

    Random positives and negatives per attribute, true and false positives and negatives
    by certainty, and the audit's exemplars (CIEs, PIEs, overridden samples) by identity
    group. Reloading draws a new sample; each page shows the seed that redraws it.

    \b
    Example:
      sparsebias view exported/resnet18_99 --reference exported/resnet18_dense
    """
    from .viewer import load_viewer_data, serve

    viewer_data = load_viewer_data(bundle, reference, data=data, split=split)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: serving on {host}: anyone who can reach it sees the images and predictions", err=True)
    serve(viewer_data, host=host, port=port, echo=click.echo)


def _judged(bundles, data, engine, stored_logits, splits=("val", "test")) -> list:
    """The bundles, each re-run on `splits` of its data unless --stored-logits."""
    from tqdm import tqdm

    from .replay import replay_bundle

    if stored_logits:
        click.echo("warning: --stored-logits: judging the logits the bundles claim, not what their models compute",
                   err=True)
        return bundles
    judged = []
    for bundle in bundles:
        with tqdm(desc=f"re-running {bundle.path.name}", unit="img", leave=False, file=sys.stderr) as bar:
            def progress(done, total, bar=bar):
                bar.total = total
                bar.update(done - bar.n)

            judged.append(replay_bundle(bundle, splits=splits, data=data, engine=engine, progress=progress,
                                        echo=lambda text: tqdm.write(text, file=sys.stderr)))
    return judged


def _loaded(paths, trusted_keys=()) -> list:
    """The bundles at `paths`, verified once; with trusted keys each must carry a signature one of them verifies."""
    from .bundle import load_bundle
    from .signing import verify_bundle

    if not trusted_keys:
        return [load_bundle(path) for path in paths]
    bundles = [verify_bundle(path, trusted_keys) for path in paths]
    for path in paths:
        click.echo(f"signature of {path}: verified", err=True)
    return bundles


def _signed(bundle) -> bool:
    from .signing import SIGNATURE

    return (Path(bundle) / SIGNATURE).is_file()


def _say_signature_dropped(path, was_signed: bool) -> None:
    if was_signed:
        click.echo(f"note: {path} was signed; this new version is not (a signature cannot be renewed without the "
                   f"key): sign it again with `sparsebias sign {path} --key KEY`", err=True)


def _num(x):
    return "undefined" if x is None else f"{x:.4f}"


def _names(text):
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SparsebiasError(f"{option}: expected comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise SparsebiasError(f"{option}: every value must be at least 1, got {text!r}")
    return values


def _summary(bundle, per_layer: bool = True) -> str:
    m = bundle.manifest
    lines = [f"bundle       {bundle.path}",
             f"model        {m['architecture']}, {len(m['attributes'])} attribute(s), input {m['input']['shape'][1:]}",
             f"recipe       {m['recipe']['source']}",
             f"sparsity     {m['sparsity']['overall']:.4f} overall"]
    if "flops" in m:  # bundles from sparsebias 0.1.0 before FLOPs were recorded lack it
        lines.append(f"cost         {m['flops']['dense_macs'] / 1e9:.3f} GMACs dense, "
                     f"{m['flops']['sparse_macs'] / 1e9:.3f} sparse ({m['flops']['reduction']:.1f}x fewer) per image")
    for split, scores in m["metrics"].items():
        lines.append(f"{split:12s} mean accuracy {scores['accuracy']:.4f}  mean AUC {scores['auc']:.4f}")
    t = m["training"]
    lines.append(f"training     best epoch {t['best_epoch']} of {t['epochs']}, {t['seconds']:.0f} s, seed {t['seed']}")
    lines.append(f"onnx check   max |onnx - torch| = {m['export']['max_abs_diff_vs_torch']:.2e}")
    mitigations = m.get("mitigations", {})
    if "thresholds" in mitigations:
        lines.append(f"thresholds   calibrated on {mitigations['thresholds']['split']}")
    if "overrides" in mitigations:
        o = mitigations["overrides"]
        lines.append(f"overrides    {o['rows']} row(s), top {o['budget']:.0%} by dense uncertainty, {o['label']} labels, "
                     f"{len(o['attributes'])} attribute(s)")
    if per_layer:
        lines.append("per-layer sparsity:")
        lines += [f"  {name:40s} {value:.4f}" for name, value in m["sparsity"]["per_layer"].items()]
    return "\n".join(lines)
