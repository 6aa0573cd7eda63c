"""compress and fidelity: train and prune as a recipe says, and measure how CelebA-like a dense model is."""

from __future__ import annotations

from pathlib import Path

import click

from .common import names


@click.command()
@click.option("--recipe", "recipe", required=True, type=click.Path(dir_okay=False),
              help="SparseML recipe (YAML, or Markdown with YAML front matter).")
@click.option("--data", default=None, help="synthfaces (default), synthfaces:train=..,size=..,seed=.., celeba:PATH, "
                                           "fairface:PATH or utkface:PATH.")
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
      sparsebias compress --recipe recipes/resnet18_pt_95.yaml --from exported/resnet18_dense
      sparsebias compress --recipe recipes/resnet18_dense.yaml --data celeba:~/data/celeba --attributes Smiling
      sparsebias compress --recipe recipes/resnet18_99.yaml --device cuda --precision bf16
      torchrun --nproc-per-node 4 -m sparsebias compress --recipe recipes/resnet18_99.yaml
    """
    from ..recipes import parse_overrides
    from ..report import bundle_summary
    from ..training import compress as run

    bundle = run(recipe, data=data, attributes=names(attributes), overrides=parse_overrides(overrides), name=name,
                 out_dir=out_dir, from_path=from_path, seed=seed, resume=resume, device=device, precision=precision,
                 echo=click.echo)
    if bundle is not None:  # under torchrun, rank 0 writes the bundle and speaks
        click.echo(bundle_summary(bundle))


@click.command()
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
    from ..recipes import parse_overrides
    from ..report.fidelity import fidelity_markdown, write_fidelity
    from ..study.fidelity import fidelity as measure
    from ..training import compress as run

    if bundle is None:
        bundle = run(recipe, data=data, overrides=parse_overrides(overrides), name=f"{Path(recipe).stem}-fidelity",
                     seed=seed, echo=click.echo).path
    result = measure(bundle, split=split)
    out_dir = Path(out_dir) if out_dir else Path(bundle).parent / f"{Path(bundle).name}-fidelity"
    write_fidelity(result, out_dir)
    click.echo(fidelity_markdown(result))
    click.echo(f"written to {out_dir}/fidelity.{{json,md,png}}")


@click.command()
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--calibration", default=512, show_default=True, type=click.IntRange(min=1),
              help="Training images the activation ranges are calibrated on.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the calibration draw.")
@click.option("--name", default=None, help="The INT8 bundle's name (default: BUNDLE's name + '-int8').")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Folder the INT8 bundle is written into (default: BUNDLE's).")
@click.option("--data", default=None, help="Where the images are (as compress --data; default: the bundle's data set).")
@click.option("--target", type=click.Choice(["deepsparse", "tensorrt"]), default="deepsparse", show_default=True,
              help="deepsparse: the QOperator graph DeepSparse runs whole (onnxruntime runs it too); tensorrt: a QDQ "
                   "graph with int8 symmetric activations, as TensorRT builds INT8 engines from.")
def quantize(bundle, calibration, seed, name, out_dir, data, target):
    """Quantize a bundle to INT8 (post-training, static) as a new bundle DeepSparse runs whole.

    Weights become symmetric int8 (pruned weights stay exactly zero), activations uint8
    calibrated on training images (int8 symmetric with --target tensorrt); val and test
    logits are re-computed, and the change in accuracy and AUC against the FP32 bundle is
    recorded. Audit the two with `sparsebias audit INT8 --reference FP32`.

    \b
    Example:
      sparsebias quantize exported/resnet18_95
      sparsebias quantize exported/resnet18_95 --target tensorrt --name resnet18_95-int8-trt
      sparsebias audit exported/resnet18_95-int8 --reference exported/resnet18_95
    """
    from ..quantization import quantize as run
    from ..report import bundle_summary

    written = run(bundle, calibration=calibration, seed=seed, name=name, out_dir=out_dir, data=data, target=target,
                  echo=click.echo)
    click.echo(bundle_summary(written, per_layer=False))
    given = [f"--{key}" for key in ("calibration", "seed")
             if click.get_current_context().get_parameter_source(key) == click.core.ParameterSource.COMMANDLINE]
    if given and "calibration" not in written.manifest["quantization"]:
        click.echo(f"note: {' and '.join(given)} unused: the ranges come from the bundle's quantization-aware training")
