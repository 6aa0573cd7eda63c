"""FairGRAPE (Lin, Kim, Joo, ECCV 2022): pruning that keeps every sensitive group's share.

Per sensitive group g (each combination of the `sensitive` columns' values), a weight's
importance is (w * dL_g/dw)^2 averaged over batches drawn from that group alone. Within
each layer, weights are kept greedily: the group that has so far kept the smallest share
of its pre-pruning importance in that layer takes its most important remaining weight,
until the layer's keep count is reached. Pruning is gradual: each update removes a
further share of the weights, with training in between, until the final sparsity.

For large layers the greedy takes several weights per turn (at most 1/(16 G) of what is
left to choose), which keeps each update to seconds; a layer whose keep count is below
16 G per group is chosen one weight at a time, the exact greedy.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .scored import ScoredPruningModifier

TURNS_PER_GROUP = 16
WINDOW = 256   # weights looked at per step along a group's order; most are often kept already


def fair_keep(importance: np.ndarray, eligible: np.ndarray, k: int, turns_per_group: int = TURNS_PER_GROUP) -> np.ndarray:
    """Boolean mask of k weights kept from one layer, chosen greedily group by group.

    importance: (groups, n) non-negative; eligible: (n,) weights still unpruned.
    A group with no importance in the layer counts as fully served.

    >>> imp = np.array([[4., 3., 0., 0.], [0., 0., 2., 1.]])
    >>> fair_keep(imp, np.ones(4, bool), 2).astype(int).tolist()
    [1, 0, 1, 0]
    """
    n_groups, n = importance.shape
    importance = np.where(eligible, importance, 0.0)
    total = importance.sum(axis=1)
    kept = np.zeros(n, dtype=bool)
    kept_importance = np.zeros(n_groups)
    remaining = min(k, int(eligible.sum()))
    orders = _orders(importance, eligible, remaining)
    cursor = np.zeros(n_groups, dtype=int)
    while remaining > 0:
        share = np.where(total > 0, kept_importance / np.where(total > 0, total, 1), np.inf)
        g = int(np.argmin(share)) if np.isfinite(share).any() else 0
        take = max(1, min(remaining, math.ceil(remaining / (turns_per_group * n_groups))))
        order, chosen, need = orders[g], [], take
        while need and cursor[g] < len(order):
            window = order[cursor[g]:cursor[g] + max(2 * need, WINDOW)]
            fresh = window[~kept[window]]
            if len(fresh) > need:
                fresh = fresh[:need]
                cursor[g] += int(np.flatnonzero(window == fresh[-1])[0]) + 1
            else:
                cursor[g] += len(window)
            chosen.extend(fresh.tolist())
            need -= len(fresh)
        if not chosen:  # this group has nothing left; serve the others
            total[g] = 0
            if not (total > 0).any():
                rest = np.flatnonzero(eligible & ~kept)[:remaining]
                kept[rest] = True
                break
            continue
        kept[chosen] = True
        kept_importance += importance[:, chosen].sum(axis=1)
        remaining -= len(chosen)
    return kept


def _orders(importance: np.ndarray, eligible: np.ndarray, limit: int) -> list[np.ndarray]:
    """Each group's eligible weights, most important first, ties to the earlier weight: at
    least the first `limit` of them.

    One unique 64-bit key per weight: the complement of its float32 importance's bits (which
    order non-negative floats) above its position. The same order as a stable sort, on every
    machine. The greedy never reads past a group's first k weights (every weight before its
    cursor is kept, and at most k are), so when k is small only those are partitioned off and
    sorted.
    """
    index = np.flatnonzero(eligible)
    bits = np.abs(importance[:, index]).astype(np.float32).view(np.uint32).astype(np.uint64)
    keys = (np.uint64(0xFFFFFFFF) - bits) << np.uint64(32) | np.arange(len(index), dtype=np.uint64)
    if 0 < limit <= len(index) // 2:   # above half, partitioning costs more than sorting the rest
        keys = np.partition(keys, limit - 1, axis=1)[:, :limit]
    keys.sort(axis=1)
    return [index[row] for row in (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)]


class FairGRAPEPruningModifier(ScoredPruningModifier):
    """| !FairGRAPEPruningModifier
    |     params: __ALL_PRUNABLE__
    |     sensitive: [gender, race]
    |     init_sparsity: 0.05
    |     final_sparsity: 0.9
    |     start_epoch: 1.0
    |     end_epoch: 5.0
    |     update_frequency: 0.5
    |     num_batches: 1
    """

    needs_data = True

    def __init__(self, params, init_sparsity, final_sparsity, start_epoch, end_epoch, sensitive,
                 update_frequency=-1.0, inter_func="cubic", leave_enabled=True, num_batches=1):
        super().__init__(params, init_sparsity, final_sparsity, start_epoch, end_epoch, update_frequency,
                         inter_func, leave_enabled, False, num_batches)
        if isinstance(sensitive, str):
            sensitive = [sensitive]
        if not sensitive or not all(isinstance(s, str) for s in sensitive):
            raise ValueError(f"FairGRAPEPruningModifier: sensitive must name one or more label columns, "
                             f"got {sensitive!r}")
        self.sensitive = list(sensitive)

    def scores(self):
        """Per parameter, a (groups, *shape) tensor of group importances."""
        data = self._score_data
        per_group = []
        for rows in data.group_rows(self.sensitive).values():
            total = None
            for grads in self.loss_gradients(data.batches(self.num_batches, rows)):
                term = [(w.detach() * g) ** 2 for w, g in zip(self.parameters, grads)]
                total = term if total is None else [t + s for t, s in zip(total, term)]
            per_group.append([t / self.num_batches for t in total])
        return [torch.stack(layer) for layer in zip(*per_group)]

    def select(self, scores, sparsities):
        masks = []
        for importance, mask, sparsity in zip(scores, self.masks, sparsities):
            n = mask.numel()
            kept = fair_keep(importance.reshape(len(importance), -1).double().cpu().numpy(),
                             mask.flatten().cpu().numpy() > 0, n - round(n * sparsity))
            masks.append(torch.from_numpy(kept).to(mask.dtype).view_as(mask))
        return masks
