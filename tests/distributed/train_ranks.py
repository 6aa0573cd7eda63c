"""Run by tests/test_distributed.py under torchrun: trains each recipe given on tiny
SynthFaces with every rank, and saves each rank's final weights, so the test can compare
the ranks' masks itself rather than trust the check inside `train`.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed/train_ranks.py \
        OUT RECIPE[@KEY=VALUE,...]...
"""

import sys
from pathlib import Path

import torch

from sparsebias.core import Outputs
from sparsebias.core.devices import resolve_device
from sparsebias.core.distributed import Ranks, gather_rows
from sparsebias.data import open_data
from sparsebias.data.loader import FaceImages
from sparsebias.recipes import load_recipe, parse_overrides
from sparsebias.training.loop import train
from sparsebias.training.models import build_model

DATA = "synthfaces:train=96,val=48,test=400,size=32"


def main(out: Path, recipes: list[str]) -> None:
    ranks = Ranks.from_env()
    device = resolve_device("cpu")
    ranks.start(device)
    table = ranks.main_first(lambda: open_data(DATA, echo=lambda *a: None))
    sets = ranks.main_first(lambda: {s: FaceImages(table, s, table.names, 32) for s in ("train", "val")})
    rows = torch.arange(ranks.rank, 11, ranks.world)
    assert torch.equal(gather_rows(rows * 10, ranks), torch.arange(11) * 10)
    for entry in recipes:
        path, _, extra = entry.partition("@")
        settings = {"image_size": 32, "batch_size": 32, "num_epochs": 2, "data": DATA}
        recipe = load_recipe(path, {**settings, **parse_overrides(extra.split(",") if extra else [])})
        outputs = Outputs.from_table(table, list(table.names))
        torch.manual_seed(0)
        model = build_model("resnet18", outputs.size)
        work = out / Path(path).stem
        if ranks.main:
            work.mkdir(parents=True)
        ranks.barrier()
        train(model, recipe, outputs, sets["train"], sets["val"], work_dir=work, seed=0, device=device,
              ranks=ranks, echo=lambda *a: None)
        torch.save(model.state_dict(), work / f"rank{ranks.rank}.pt")
    ranks.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
