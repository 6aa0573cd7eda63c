"""The command line: one thin command per verb over the library (parse, call, print).

Commands live by pipeline stage: train (compress, quantize, fidelity), bundles (info, keygen,
sign), inference (bench, predict), audit (audit, calibrate, overrides, gate), study
(sweep) and view.
"""

import click

from .._version import __version__
from .audit import audit, calibrate, gate, overrides
from .bundles import info, keygen, sign
from .common import EXIT_USER_ERROR, Group
from .inference import bench, predict
from .study import sweep
from .train import compress, fidelity, quantize
from .view import view


@click.group(cls=Group)
@click.version_option(__version__, prog_name="sparsebias")   # not from package metadata: a working tree has none
def main():
    """Compress vision classifiers, run them sparse, and audit them for bias."""


for command in (compress, fidelity, quantize, info, keygen, sign, bench, predict, audit, calibrate, overrides, gate, sweep,
                view):
    main.add_command(command)

__all__ = ["EXIT_USER_ERROR", "main"]
