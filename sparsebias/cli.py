"""The command line: one thin command per verb over the library."""

from __future__ import annotations

import sys

import click

from .errors import SparsebiasError

EXIT_USER_ERROR = 2


class _Group(click.Group):
    """Turns a user error into one line on stderr and exit status 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SparsebiasError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            click.echo("interrupted; nothing half-written was kept (compress: rerun with --resume)", err=True)
            sys.exit(130)


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
def compress(recipe, data, attributes, overrides, from_path, name, out_dir, seed, resume):
    """Train and prune a model as a SparseML recipe says, then export a verified bundle.

    \b
    Example:
      sparsebias compress --recipe recipes/resnet18_99.yaml
      sparsebias compress --recipe recipes/resnet18_gmp_pt_95.yaml --from exported/resnet18_dense
      sparsebias compress --recipe recipes/resnet18_dense.yaml --data celeba:~/data/celeba --attributes Smiling
    """
    from .compress import compress as run
    from .recipes import parse_overrides

    names = [a.strip() for a in attributes.split(",") if a.strip()] if attributes else None
    bundle = run(recipe, data=data, attributes=names, overrides=parse_overrides(overrides), name=name,
                 out_dir=out_dir, from_path=from_path, seed=seed, resume=resume, echo=click.echo)
    click.echo(_summary(bundle))


@main.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--layers", is_flag=True, help="Also list every layer's sparsity.")
def info(bundle, layers):
    """Verify a bundle (hashes, schema) and describe it.

    \b
    Example:
      sparsebias info exported/resnet18_99 --layers
    """
    from .bundle import load_bundle

    click.echo(_summary(load_bundle(bundle), per_layer=layers))


def _summary(bundle, per_layer: bool = True) -> str:
    m = bundle.manifest
    lines = [f"bundle       {bundle.path}",
             f"model        {m['architecture']}, {len(m['attributes'])} attribute(s), input {m['input']['shape'][1:]}",
             f"recipe       {m['recipe']['source']}",
             f"sparsity     {m['sparsity']['overall']:.4f} overall"]
    for split, scores in m["metrics"].items():
        lines.append(f"{split:12s} mean accuracy {scores['accuracy']:.4f}  mean AUC {scores['auc']:.4f}")
    t = m["training"]
    lines.append(f"training     best epoch {t['best_epoch']} of {t['epochs']}, {t['seconds']:.0f} s, seed {t['seed']}")
    lines.append(f"onnx check   max |onnx - torch| = {m['export']['max_abs_diff_vs_torch']:.2e}")
    if per_layer:
        lines.append("per-layer sparsity:")
        lines += [f"  {name:40s} {value:.4f}" for name, value in m["sparsity"]["per_layer"].items()]
    return "\n".join(lines)
