"""`sparsebias view`: a local web page for looking at the examples behind the numbers.

Random positives and negatives of an attribute, a model's true and false positives and
negatives split by certainty, and the audit's exemplars (CIEs, PIEs, overridden
samples) by identity group; every page names the seed that redraws it. Read-only,
bound to loopback unless told otherwise, serving only the data set's own images.
"""

from .app import create_app, serve
from .samples import ViewerData, load_viewer_data

__all__ = ["ViewerData", "create_app", "load_viewer_data", "serve"]
