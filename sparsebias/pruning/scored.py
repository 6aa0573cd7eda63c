"""A gradual pruner whose weight scores a subclass computes; the base keeps the best.

At every mask update the executor's gradual pruner (sparsebias.recipes) asks for scores
and masks: a method overrides `scores()` (one tensor per pruned parameter, higher is
better to keep; magnitude unless overridden) and here `select()` keeps, by default, the
top scores among the weights still unpruned, over all layers or per layer. Pruned weights never come
back, so masks only shrink.
"""

from __future__ import annotations

import math

import torch

from .magnitude import GradualPruningModifier, keep_highest


def keep_top(scores: list[torch.Tensor], masks: list[torch.Tensor], sparsities: list[float],
             global_sparsity: bool) -> list[torch.Tensor]:
    """Masks keeping the highest-scoring unmasked weights: round(n * (1 - s)) of n per
    tensor, or of all n weights together when global. Ties go to the earlier weight.

    >>> keep_top([torch.tensor([3., 1., 2., 5.])], [torch.tensor([1., 1., 1., 0.])], [0.5], False)
    [tensor([1., 0., 1., 0.])]
    """
    ranked = [s.float().masked_fill(m <= 0, -math.inf) for s, m in zip(scores, masks)]
    if global_sparsity:
        flat = torch.cat([r.flatten() for r in ranked])
        chosen = keep_highest(flat, _keep_count(flat.numel(), sparsities[0]))
        return [c.view_as(r) for c, r in zip(torch.split(chosen, [r.numel() for r in ranked]), ranked)]
    return [keep_highest(r.flatten(), _keep_count(r.numel(), s)).view_as(r) for r, s in zip(ranked, sparsities)]


def _keep_count(n: int, sparsity: float) -> int:
    return n - round(n * sparsity)


class ScoredPruningModifier(GradualPruningModifier):
    """Base of sparsebias's pruning modifiers. Subclasses score weights in `scores`."""

    needs_data = False       # whether scores() samples training batches
    global_by_default = False  # rank weights over all layers together unless the recipe says

    def __init__(self, params, init_sparsity, final_sparsity, start_epoch, end_epoch, update_frequency=-1.0,
                 inter_func: str = "cubic", leave_enabled: bool = True, global_sparsity: bool | None = None,
                 num_batches: int = 1):
        global_sparsity = self.global_by_default if global_sparsity is None else global_sparsity
        super().__init__(params, init_sparsity, final_sparsity, start_epoch, end_epoch, update_frequency, inter_func,
                         "unstructured", global_sparsity, leave_enabled)
        if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(f"{type(self).__name__}: num_batches must be a positive integer, got {num_batches!r}")
        self.num_batches = num_batches
        self._module = None
        self._score_data = None

    def initialize(self, module, epoch: float = 0.0, **kwargs):
        self._module = module
        self._score_data = kwargs.get("score_data")
        if self.needs_data and self._score_data is None:
            raise ValueError(f"{type(self).__name__} scores weights on training batches; "
                             "it needs score_data (sparsebias compress provides it)")
        super().initialize(module, epoch, **kwargs)

    def select(self, scores: list[torch.Tensor], sparsities: list[float]) -> list[torch.Tensor]:
        return keep_top(scores, self.masks, sparsities, self.global_sparsity)

    def loss_gradients(self, batches, create_graph: bool = False, temperature: float = 1.0):
        """Yield, per batch, the loss's gradient w.r.t. the pruned parameters.

        Gradients come from torch.autograd.grad, so the training step's .grad stays
        untouched, and are masked as training's are; BatchNorm statistics are restored
        afterwards. Under torchrun they are averaged over the ranks, except with
        `create_graph`, whose caller reduces what it derives from them.
        """
        module, data = self._module, self._score_data
        was_training = module.training
        buffers = {k: v.clone() for k, v in module.named_buffers()}
        module.train()
        try:
            for x, y in batches:
                loss = data.loss(module(x).float() / temperature, y)
                grads = self.masked(torch.autograd.grad(loss, self.parameters, create_graph=create_graph))
                yield grads if create_graph else data.reduce(grads)
        finally:
            module.load_state_dict(buffers, strict=False)
            module.train(was_training)
