"""Training batches for pruning methods that score weights on data (SNIP, GraSP, FairGRAPE).

Under torchrun every rank draws the same batches and computes on its share of each
(rows r, r + world, ...); `reduce` averages what the ranks computed, so every rank
scores, and masks, alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..core.distributed import Ranks, all_reduce_mean
from ..core.errors import SparsebiasError
from ..data.loader import FaceImages, normalize


@dataclass
class ScoreData:
    dataset: FaceImages
    loss: Callable
    batch_size: int
    seed: int
    device: torch.device = torch.device("cpu")
    ranks: Ranks = Ranks.single()
    draws: int = field(default=0, repr=False)

    def batches(self, count: int, rows: torch.Tensor | None = None):
        """`count` random batches (x, targets) of the training split, or of `rows` of it."""
        rows = torch.arange(len(self.dataset)) if rows is None else rows
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.draws)
        self.draws += 1
        order = rows[torch.randperm(len(rows), generator=generator)]
        size = min(self.batch_size, len(rows))
        for b in range(count):
            index = order[torch.arange(b * size, (b + 1) * size) % len(order)][self.ranks.rank::self.ranks.world]
            x = normalize(self.dataset.images[index].to(self.device))
            yield x, self.dataset.labels[index].to(self.device)

    def reduce(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """The mean over the ranks of what each computed on its share of the batches."""
        return all_reduce_mean(tensors)

    def group_rows(self, sensitive) -> dict[str, torch.Tensor]:
        """Training rows of each group: each combination of the sensitive columns' values that
        occurs at least twice (a batch of one cannot pass BatchNorm in training mode)."""
        names = list(self.dataset.column_names)
        unknown = [s for s in sensitive if s not in names]
        if unknown:
            raise SparsebiasError(f"sensitive column {unknown[0]!r} is not a label of the data set "
                                  f"(labels: {', '.join(names)})")
        values = self.dataset.columns[:, [names.index(s) for s in sensitive]]
        for s, column in zip(sensitive, values.T):
            if len(column.unique()) < 2:
                raise SparsebiasError(f"sensitive column {s!r} has a single value in the training split; "
                                      "groups need two or more")
        combos, codes = values.unique(dim=0, return_inverse=True)
        rows = {",".join(f"{s}={int(v)}" for s, v in zip(sensitive, combo)): torch.nonzero(codes == i).flatten()
                for i, combo in enumerate(combos)}
        return {group: r for group, r in rows.items() if len(r) >= 2}
