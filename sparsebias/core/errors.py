"""The one exception type that means "the user's input is wrong", not "sparsebias is broken"."""

from pathlib import Path


class SparsebiasError(Exception):
    """A problem with what the user gave us; the CLI prints it as one line and exits 2."""


MAX_SEED = 2**32 - 1   # numpy's legacy seeding and every generator we use accept 0 .. 2**32 - 1


def check_seed(seed, what: str = "seed") -> None:
    """Refuse a seed some generator would reject later, after setup: an int in 0 .. MAX_SEED passes."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise SparsebiasError(f"{what} must be an integer from 0 to 2**32 - 1, got {seed!r}")


def check_file(path, what: str) -> Path:
    """`path` when it is a regular file, else one line saying what it is: a folder cannot be read
    as one, and a pipe or a device would block the read or never end it."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise SparsebiasError(f"{what} {path} is a folder, not a file")
    if path.exists():
        raise SparsebiasError(f"{what} {path} is not a regular file (a pipe, device or socket)")
    raise SparsebiasError(f"{what} not found: {path}")


def first_line(error: Exception | str, limit: int = 200) -> str:
    """The first line of an exception's message (its type where it has none), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def yaml_error(path, error: Exception, line_offset: int = 0) -> SparsebiasError:
    """A YAML parse error as one line: file, line (where the parser knows it) and the problem."""
    mark = getattr(error, "problem_mark", None)
    where = f"{path}:{mark.line + 1 + line_offset}" if mark else str(path)
    return SparsebiasError(f"{where}: YAML error: {first_line(getattr(error, 'problem', None) or error)}")
