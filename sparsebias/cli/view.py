"""view: the examples behind the numbers, in a local web page."""

from __future__ import annotations

import click


@click.command()
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
    from ..viewer import load_viewer_data, serve

    viewer_data = load_viewer_data(bundle, reference, data=data, split=split)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: serving on {host}: anyone who can reach it sees the images and predictions", err=True)
    serve(viewer_data, host=host, port=port, echo=click.echo)
