"""The one exception type that means "the user's input is wrong", not "sparsebias is broken"."""


class SparsebiasError(Exception):
    """A problem with what the user gave us; the CLI prints it as one line and exits 2."""
