"""Train a recipe on tiny SynthFaces and print the mask of every pruned weight as JSON.

    python tests/profile_masks.py RECIPE EPOCHS

Run by test_profiles.py under each profile's interpreter: a digest of each convolution's
zero pattern, its sparsity, and a digest of its weights.
"""

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from sparsebias.recipes import parse_overrides
from sparsebias.training import compress
from sparsebias.training.checkpoint import state_dict_from


def main(recipe: str, epochs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="profile_masks_") as tmp:   # a bundle and its cache: about 90 MB
        work = Path(tmp)
        os.environ["SPARSEBIAS_CACHE"] = str(work / "cache")
        overrides = parse_overrides(["image_size=32", "batch_size=32", f"num_epochs={epochs}"])
        bundle = compress(recipe, data="synthfaces:train=96,val=48,test=64,size=32", overrides=overrides,
                          name="run", out_dir=work, echo=lambda *a, **k: None)
        weights = state_dict_from(bundle.file("model.pt"))
    masks = {}
    for name, weight in weights.items():
        if weight.ndim == 4:
            w = weight.numpy()
            masks[name] = {"mask": hashlib.sha256(np.packbits(w == 0).tobytes()).hexdigest(),
                           "sparsity": float((w == 0).mean()), "weights": hashlib.sha256(w.tobytes()).hexdigest()}
    print(json.dumps(masks))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
