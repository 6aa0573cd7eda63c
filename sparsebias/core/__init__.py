"""What every stage shares: one-line user errors, atomic file writes, model output heads,
and (imported by their module path, as they load torch) devices and process groups."""

from .errors import SparsebiasError, first_line
from .files import write_atomic, write_json
from .outputs import Outputs

__all__ = ["Outputs", "SparsebiasError", "first_line", "write_atomic", "write_json"]
