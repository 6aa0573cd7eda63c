"""The baselines FairGRAPE is compared with, each scored as its paper does.

- SNIP (Lee et al., ICLR 2019): connection sensitivity |g * w| on training batches,
  usually once, at initialisation; global.
- GraSP (Wang et al., ICLR 2020): keeps the weights whose removal would most reduce
  gradient flow: GraSP's score is -w * (H g), with H g a Hessian-gradient product of the
  loss at temperature T; the weights with the largest score are removed; global.
- Lottery (Frankle & Carbin, ICLR 2019; rewinding: Frankle et al., 2019): iterative
  global magnitude pruning, each round removing the same share of the remaining weights,
  after which the surviving weights are rewound to their values at `rewind_epoch`.
- WS (Han et al., NeurIPS 2015): layer-wise magnitude pruning, iterative with retraining.
"""

from __future__ import annotations

import torch

from ..modifiers.base import RecipeError, number
from .scored import ScoredPruningModifier


def _mean(gradient_lists) -> list[torch.Tensor]:
    total, count = None, 0
    for grads in gradient_lists:
        total = [g.detach().clone() for g in grads] if total is None else [t + g.detach() for t, g in zip(total, grads)]
        count += 1
    return [t / count for t in total]


class SNIPPruningModifier(ScoredPruningModifier):
    """| !SNIPPruningModifier
    |     params: __ALL_PRUNABLE__
    |     init_sparsity: 0.9
    |     final_sparsity: 0.9
    |     start_epoch: 0.0
    |     end_epoch: 0.0
    |     num_batches: 4
    """

    needs_data = True
    global_by_default = True

    def scores(self):
        grads = _mean(self.loss_gradients(self._score_data.batches(self.num_batches)))
        return [(g * w.detach()).abs() for g, w in zip(grads, self.parameters)]


class GraSPPruningModifier(ScoredPruningModifier):
    """| !GraSPPruningModifier
    |     params: __ALL_PRUNABLE__
    |     init_sparsity: 0.9
    |     final_sparsity: 0.9
    |     start_epoch: 0.0
    |     end_epoch: 0.0
    |     num_batches: 4
    |     temperature: 200
    """

    needs_data = True
    global_by_default = True

    def __init__(self, params, init_sparsity, final_sparsity, start_epoch, end_epoch, update_frequency=-1.0,
                 inter_func="cubic", leave_enabled=True, global_sparsity=None, num_batches=1,
                 temperature: float = 200.0):
        super().__init__(params, init_sparsity, final_sparsity, start_epoch, end_epoch, update_frequency,
                         inter_func, leave_enabled, global_sparsity, num_batches)
        self.temperature = number(self, "temperature", temperature)
        if not self.temperature > 0:
            raise RecipeError(f"GraSPPruningModifier: temperature must be positive, got {temperature!r}")

    def scores(self):
        data, t = self._score_data, self.temperature
        draws = data.draws
        g = _mean(self.loss_gradients(data.batches(self.num_batches), temperature=t))
        data.draws = draws  # the Hessian pass sees the same batches as the gradient pass
        hg = None
        for grads in self.loss_gradients(data.batches(self.num_batches), create_graph=True, temperature=t):
            z = sum((gi * gd).sum() for gi, gd in zip(grads, g))
            step = data.reduce(self.masked(torch.autograd.grad(z, self.parameters)))
            hg = step if hg is None else [h + s for h, s in zip(hg, step)]
        # GraSP removes the largest -w * Hg: keep the largest w * Hg
        return [w.detach() * h / self.num_batches for w, h in zip(self.parameters, hg)]


class LotteryPruningModifier(ScoredPruningModifier):
    """| !LotteryPruningModifier
    |     params: __ALL_PRUNABLE__
    |     init_sparsity: 0.2
    |     final_sparsity: 0.9
    |     start_epoch: 1.0
    |     end_epoch: 5.0
    |     update_frequency: 1.0
    |     rewind_epoch: 0.5
    """

    global_by_default = True

    def __init__(self, params, init_sparsity, final_sparsity, start_epoch, end_epoch, update_frequency=-1.0,
                 leave_enabled=True, global_sparsity=None, rewind_epoch: float = 0.0):
        super().__init__(params, init_sparsity, final_sparsity, start_epoch, end_epoch, update_frequency,
                         "linear", leave_enabled, global_sparsity)
        self.rewind_epoch = number(self, "rewind_epoch", rewind_epoch)
        if self.rewind_epoch > max(self.start_epoch, 0):
            raise RecipeError(f"LotteryPruningModifier: rewind_epoch {rewind_epoch} is after pruning starts "
                              f"(start_epoch {start_epoch})")
        self._rewind_state = None
        self._pruned_now = False

    def sparsity_targets(self, epoch):
        """1 - (1 - init) * ((1 - final) / (1 - init)) ** progress: a constant share per round."""
        span = self.end_epoch - self.start_epoch
        progress = 1.0 if span <= 0 else min(max((epoch - self.start_epoch) / span, 0.0), 1.0)
        init = self.init_sparsity
        return [1 - (1 - init) * ((1 - final) / (1 - init)) ** progress for final in self.final_sparsities]

    def initialize(self, module, epoch=0.0, **kwargs):
        super().initialize(module, epoch, **kwargs)
        if epoch >= self.rewind_epoch:  # a resumed run then loads the saved snapshot
            self._snapshot()

    def _snapshot(self):
        self._rewind_state = {k: v.detach().clone() for k, v in self._module.state_dict().items()}

    def optimizer_post_step(self, module, optimizer, epoch, steps_per_epoch):
        super().optimizer_post_step(module, optimizer, epoch, steps_per_epoch)
        if self._rewind_state is None and epoch >= self.rewind_epoch:
            self._snapshot()

    def new_masks(self, epoch, steps_per_epoch):
        self._pruned_now = True
        return super().new_masks(epoch, steps_per_epoch)

    def update(self, module, optimizer, epoch, steps_per_epoch):
        self._pruned_now = False
        super().update(module, optimizer, epoch, steps_per_epoch)
        if self._pruned_now and self._rewind_state is not None:
            module.load_state_dict(self._rewind_state)
            self.apply()
            optimizer.state.clear()  # momentum belongs to the weights before rewinding

    def state_dict(self):
        return {**super().state_dict(), "rewind": self._rewind_state}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._rewind_state = state["rewind"]


class WSPruningModifier(ScoredPruningModifier):
    """| !WSPruningModifier
    |     params: __ALL_PRUNABLE__
    |     init_sparsity: 0.05
    |     final_sparsity: 0.9
    |     start_epoch: 1.0
    |     end_epoch: 5.0
    |     update_frequency: 0.5
    """

    def __init__(self, params, init_sparsity, final_sparsity, start_epoch, end_epoch, update_frequency=-1.0,
                 inter_func="cubic", leave_enabled=True, num_batches=1):
        super().__init__(params, init_sparsity, final_sparsity, start_epoch, end_epoch, update_frequency,
                         inter_func, leave_enabled, False, num_batches)
