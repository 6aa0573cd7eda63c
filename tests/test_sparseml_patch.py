"""Regression tests for sparseml 1.8.0's N:M masks on Conv2d weights (see sparseml_patch)."""

import pytest
import torch
from torch import nn

from sparsebias.sparseml_patch import ScheduledModifierManager, nm_masks, quiet_loggers
from sparseml.pytorch.sparsification.pruning.mask_creator import NMPruningMaskCreator


def groups_along_inputs(weight, m):
    """Every run of m consecutive input-channel weights at each (out, kh, kw) position."""
    per_position = weight.permute(0, 2, 3, 1) if weight.dim() == 4 else weight
    return per_position.reshape(-1, m)


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (1, 8)])
@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (8, 16, 1, 1), (12, 32)])
def test_nm_masks_keep_the_largest_n_of_every_group(n, m, shape):
    weight = torch.randn(shape)
    mask = nm_masks(weight, n, m)
    assert mask.shape == weight.shape
    kept = groups_along_inputs(mask, m)
    assert (kept.sum(dim=1) == n).all()
    magnitude = groups_along_inputs(weight.abs(), m)
    smallest_kept = torch.where(kept.bool(), magnitude, torch.inf).min(dim=1).values
    largest_dropped = torch.where(kept.bool(), -torch.inf, magnitude).max(dim=1).values
    assert (smallest_kept >= largest_dropped).all()


def test_sparseml_mask_creator_returns_the_weights_layout():
    """sparseml 1.8.0 returned (O, kh, kw, I) masks for (O, I, kh, kw) weights."""
    weight = torch.randn(64, 64, 3, 3)
    (mask,) = NMPruningMaskCreator(2, 4).create_sparsity_masks([weight], 0.5)
    assert mask.shape == weight.shape
    assert torch.equal(mask, nm_masks(weight, 2, 4))


def test_nm_recipe_on_conv_layers_trains_and_holds_the_pattern():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Conv2d(16, 8, 3), nn.Flatten(), nn.LazyLinear(4))
    model(torch.randn(1, 8, 8, 8))
    recipe = """
modifiers:
  - !EpochRangeModifier
    start_epoch: 0.0
    end_epoch: 3
  - !GMPruningModifier
    params: ["0.weight", "2.weight"]
    init_sparsity: 0.5
    final_sparsity: 0.5
    start_epoch: 0
    end_epoch: 2
    update_frequency: 0.5
    mask_type: "2:4"
"""
    manager = ScheduledModifierManager.from_yaml(recipe)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapped = manager.modify(model, optimizer, steps_per_epoch=2, loggers=quiet_loggers())
    for _ in range(6):
        loss = model(torch.randn(4, 8, 8, 8)).pow(2).mean()
        wrapped.zero_grad()
        loss.backward()
        wrapped.step()
    manager.finalize(model)
    for layer in (model[0], model[2]):
        nonzero = (groups_along_inputs(layer.weight.detach(), 4) != 0).sum(dim=1)
        assert nonzero.max() <= 2
        assert (layer.weight == 0).float().mean() == pytest.approx(0.5)
