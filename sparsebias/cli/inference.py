"""bench and predict: measure models on engines, and run a bundle on images."""

from __future__ import annotations

import sys

import click

from .common import TRUSTED_KEY, int_list, loaded, progress_bar


@click.command()
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
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=1),
              help="Interleaved rounds the measuring time is cut into; speedups are the median of the rounds' "
                   "ratios.")
@click.option("--profile", is_flag=True, help="Also record DeepSparse's per-layer timings.")
@click.option("--out", "out_dir", default="bench-report", show_default=True, type=click.Path(file_okay=False),
              help="Folder for bench.json, bench.md and bench.png.")
def bench(models, engines, batch_sizes, cores, reference, warmup, duration, rounds, profile, out_dir):
    """Measure items/s and latency of bundles (or ONNX files) on several engines.

    \b
    Example:
      sparsebias bench exported/resnet18_99 --reference exported/resnet18_dense --batch-size 1,16,64
      sparsebias bench model.onnx --engine available --cores 4
    """
    from ..engines import bench as run
    from ..report import bench_table, write_bench

    bar, progress = progress_bar(total=1, unit="run")
    with bar:
        report = run(models, engines=engines, batch_sizes=int_list(batch_sizes, "--batch-size"), cores=cores,
                     reference=reference, warmup_s=warmup, duration_s=duration, rounds=rounds, profile=profile,
                     progress=progress)
    click.echo(bench_table(report))
    for name, reason in report.skipped_engines.items():
        click.echo(f"note: {name} left out: {reason}", err=True)
    for a in report.disagreements:
        click.echo(f"warning: {a['engine']} differs from onnxruntime by {a['max_abs_diff']:.2e} on {a['model']}",
                   err=True)
    for model, share in {r["model"]: r["supported_share"] for r in report.fallbacks}.items():
        click.echo(f"warning: deepsparse ran {share:.0%} of {model}'s graph; the rest ran on its "
                   "bundled onnxruntime, so its figures are not DeepSparse's", err=True)
    written = write_bench(report, out_dir)
    click.echo("wrote " + ", ".join(map(str, written)))


@click.command()
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
    from ..core.files import write_atomic
    from ..engines import predict as run
    from ..engines import predictions_csv

    found, = loaded([bundle], trusted_keys)   # refused here, before any image is read
    bar, progress = progress_bar(total=0, unit="img", disable=out_file == "-")
    with bar:
        result = run(found, paths, engine=engine, batch_size=batch_size, cores=cores, progress=progress)
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
