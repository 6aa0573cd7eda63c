"""Saving and loading torch state without unpickling arbitrary objects.

Files are written with torch.save and read back with `weights_only=True`, torch's
restricted unpickler that only builds tensors and plain containers: a checkpoint
handed to us cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..core.errors import SparsebiasError, check_file, first_line


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    path = check_file(path, "checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or unsafe file
        raise SparsebiasError(f"cannot load checkpoint {path}: {first_line(e)}") from None
    if not isinstance(state, dict):
        raise SparsebiasError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    return state


def state_dict_from(path: Path) -> dict:
    """Model weights from a file: a plain state dict, or one under 'state_dict' or 'model'."""
    state = load_checkpoint(path)
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SparsebiasError(f"{path}: holds no model state dict")
    return state
