"""Writing report files so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write to a hidden sibling, then rename over `path`; a failed write (a full disk) leaves nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def written_together(write):
    """For a writer of a set of files, `write(value, out_dir, ...) -> paths`: the set lands in
    out_dir whole or not at all. Files are staged in a hidden folder (beside out_dir when it
    does not exist yet, then renamed into place; inside it otherwise, then moved in)."""
    @functools.wraps(write)
    def wrapper(value, out_dir, *args, **kwargs):
        out_dir = Path(out_dir)
        fresh = not out_dir.exists()
        home = out_dir.parent if fresh else out_dir
        home.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=home))
        try:
            written = write(value, staging, *args, **kwargs)
            if fresh:
                staging.rename(out_dir)
            else:
                for path in written:
                    os.replace(path, out_dir / path.name)
            return [out_dir / path.name for path in written]
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return wrapper


# What reading a JSON file someone handed us can raise: unreadable, not text, not JSON, or
# nested past the parser's stack (json raises RecursionError there, not a decode error).
JSON_READ_ERRORS = (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError)


def write_json(path: Path, value) -> Path:
    return write_atomic(path, json.dumps(value, indent=2, default=json_default) + "\n")


def save_figure(fig, path: Path) -> Path:
    """A matplotlib figure as PNG, atomically; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return write_atomic(path, buffer.getvalue())


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def json_default(value):
    """numpy scalars and arrays, and paths, as plain JSON values."""
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
