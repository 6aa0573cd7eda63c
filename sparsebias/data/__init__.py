"""Data sets: where they live, how they are named on the command line, how they load.

`--data` takes `synthfaces` (the default, built once and cached), `synthfaces:KEY=VALUE,...`
(train, val, test, size, seed, backdoor=ATTRIBUTE/KIND/POS/NEG/EVAL, groups=1), `celeba:PATH`,
`fairface:PATH` or `utkface:PATH`. `synthfaces:groups=1` is written in FairFace's format
and read by the FairFace reader.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import SparsebiasError
from .attributes import CELEBA_ATTRIBUTES, DEFAULT_IDENTITIES, SINGLE_ATTRIBUTE_SET
from .celeba import FaceAttributes, read_celeba
from .fairface import read_fairface
from .parallel import build_lock
from .synthfaces import Backdoor, SynthFacesConfig, write_synthfaces
from .utkface import read_utkface

READERS = {"celeba": read_celeba, "fairface": read_fairface, "utkface": read_utkface}

__all__ = [
    "CELEBA_ATTRIBUTES", "DEFAULT_IDENTITIES", "SINGLE_ATTRIBUTE_SET", "FaceAttributes",
    "cache_dir", "locate_data", "open_data", "read_celeba", "read_fairface", "read_utkface", "synthfaces_config",
]


def cache_dir() -> Path:
    """Where built data sets are kept: $SPARSEBIAS_CACHE, else ~/.cache/sparsebias."""
    return Path(os.environ.get("SPARSEBIAS_CACHE") or Path.home() / ".cache" / "sparsebias")


def synthfaces_config(options: str) -> SynthFacesConfig:
    """Parse 'train=400,val=100,test=100,size=32,seed=1,backdoor=Blond_Hair/square/0.95/0.05/0.5'."""
    kwargs = {}
    keys = {"train": ("n_train", int), "val": ("n_val", int), "test": ("n_test", int),
            "size": ("image_size", int), "seed": ("seed", int)}
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        try:
            if key == "groups":
                kwargs["groups"] = {"1": True, "0": False}[value]
            elif key == "backdoor":
                parts = value.split("/")
                kwargs["backdoor"] = Backdoor(parts[0], *parts[1:2], *map(float, parts[2:5]))
            elif key in keys:
                kwargs[keys[key][0]] = keys[key][1](value)
            else:
                raise SparsebiasError(
                    f"unknown SynthFaces option {key!r} in --data {'synthfaces:' + options!r}; "
                    "known: train, val, test, size, seed, backdoor, groups")
        except (ValueError, TypeError, KeyError):
            raise SparsebiasError(f"bad SynthFaces option {item!r} in --data {'synthfaces:' + options!r}") from None
    return SynthFacesConfig(**kwargs)


def locate_data(spec: str | None, root=None) -> FaceAttributes:
    """Open a data set that exists, never building one: for read-only tools such as the viewer.

    SynthFaces is looked for in the cache, then at `root` (where a bundle says it was)."""
    kind, _, rest = (spec or "synthfaces").partition(":")
    if kind != "synthfaces":
        return open_data(spec)
    config = synthfaces_config(rest)
    for folder in (cache_dir() / config.folder_name, Path(root) if root else None):
        if folder is not None and folder.is_dir():
            return _read_synthfaces(folder, config)
    raise SparsebiasError(f"SynthFaces ({spec}) is not built here; run `sparsebias compress` with it first, "
                          "or point --data at the images")


def open_data(spec: str | None = None, echo=print) -> FaceAttributes:
    """Open the data set a `--data` value names, building SynthFaces on first use.

    >>> open_data("celeba:~/data/celeba").split("test")  # doctest: +SKIP
    """
    kind, _, rest = (spec or "synthfaces").partition(":")
    if kind in READERS:
        if not rest:
            raise SparsebiasError(f"--data {kind}:PATH needs a path")
        return READERS[kind](Path(rest).expanduser())
    if kind != "synthfaces":
        raise SparsebiasError(f"unknown data set {kind!r} in --data {spec!r}; "
                              "use synthfaces, celeba:PATH, fairface:PATH or utkface:PATH")
    config = synthfaces_config(rest)
    folder = cache_dir() / config.folder_name
    done = "fairface_label_val.csv" if config.groups else "list_eval_partition.txt"
    with build_lock(folder):
        if not (folder / done).exists():
            echo(f"Building SynthFaces ({config.n_images} images, {config.image_size}px) in {folder}")
            from tqdm import tqdm
            with tqdm(total=config.n_images, unit="img", leave=False) as bar:
                write_synthfaces(folder, config, workers=os.cpu_count() or 1, progress=bar.update)
        else:
            echo(f"Using SynthFaces in {folder}")
    return _read_synthfaces(folder, config)


def _read_synthfaces(folder: Path, config: SynthFacesConfig) -> FaceAttributes:
    """SynthFaces is in FairFace's format with groups, else in CelebA's."""
    return read_fairface(folder) if config.groups else read_celeba(folder)
