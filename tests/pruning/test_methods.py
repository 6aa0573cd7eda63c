"""Each pruning modifier keeps what its paper says it keeps, checked on a tiny network
against an independent computation of its scores."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call, grad, jvp

from sparsebias.pruning import (
    GraSPPruningModifier,
    LotteryPruningModifier,
    ScoreData,
    SNIPPruningModifier,
    WSPruningModifier,
    keep_top,
)
from sparsebias.recipes import RecipeManager

from .conftest import apply_once

PARAMS = ["conv.weight", "fc.weight"]


def same_batches(data, count):
    """The batches a modifier drew first from `data` (same seed, first draw)."""
    return list(ScoreData(data.dataset, data.loss, data.batch_size, data.seed).batches(count))


def top_k_mask(scores, k):
    flat = torch.cat([s.flatten() for s in scores])
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.argsort(flat, descending=True, stable=True)[:k]] = True
    return keep


def kept(model):
    return torch.cat([(dict(model.named_parameters())[p] != 0).flatten() for p in PARAMS])


def n_weights(model):
    return sum(dict(model.named_parameters())[p].numel() for p in PARAMS)


def test_keep_top_never_brings_back_a_pruned_weight():
    scores = [torch.tensor([9.0, 1.0, 2.0, 3.0]), torch.tensor([5.0, 0.5])]
    masks = [torch.tensor([0.0, 1, 1, 1]), torch.tensor([1.0, 1])]
    global_masks = keep_top(scores, masks, [0.5, 0.5], global_sparsity=True)
    assert [m.tolist() for m in global_masks] == [[0, 0, 1, 1], [1, 0]]  # 9 is the highest score, but pruned
    per_layer = keep_top(scores, masks, [0.5, 0.5], global_sparsity=False)
    assert [m.tolist() for m in per_layer] == [[0, 0, 1, 1], [1, 0]]


@given(st.lists(st.integers(-3, 3), min_size=1, max_size=40), st.data())
@settings(max_examples=200, deadline=None)
def test_keep_top_is_a_stable_descending_sort_however_many_ties(values, data):
    scores = torch.tensor(values, dtype=torch.float32)
    masks = torch.tensor(data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values))), dtype=torch.float32)
    sparsity = data.draw(st.floats(0.0, 1.0))
    (mask,) = keep_top([scores], [masks], [sparsity], global_sparsity=False)
    ranked = scores.masked_fill(masks <= 0, -float("inf"))
    expected = top_k_mask([ranked], len(values) - round(len(values) * sparsity))
    assert torch.equal(mask.bool(), expected)


def test_snip_keeps_the_largest_connection_sensitivity(net, data):
    w0 = {p: w.detach().clone() for p, w in net.named_parameters()}
    batches = same_batches(data, 2)
    net.zero_grad()
    sum(data.loss(net(x), y) for x, y in batches).backward()
    expected = top_k_mask([(dict(net.named_parameters())[p].grad / 2 * w0[p]).abs() for p in PARAMS],
                          n_weights(net) - round(0.8 * n_weights(net)))
    mod = SNIPPruningModifier(PARAMS, 0.8, 0.8, start_epoch=0.0, end_epoch=0.0, num_batches=2)
    apply_once(mod, net, data)
    assert torch.equal(kept(net), expected)
    assert kept(net).float().mean().item() == pytest.approx(0.2, abs=1e-3)


def test_grasp_removes_the_largest_minus_w_times_hessian_gradient(net, data):
    params = {p: w.detach().clone() for p, w in net.named_parameters()}
    batches = same_batches(data, 2)
    t = 200.0

    def loss(pruned, x, y):
        return data.loss(functional_call(net, {**params, **pruned}, (x,)) / t, y)

    pruned = {p: params[p] for p in PARAMS}
    g = {p: sum(grad(loss)(pruned, x, y)[p] for x, y in batches) / 2 for p in PARAMS}
    hg = {p: sum(jvp(lambda q: grad(loss)(q, x, y), (pruned,), (g,))[1][p] for x, y in batches) / 2 for p in PARAMS}
    grasp_score = [-params[p] * hg[p] for p in PARAMS]
    expected = top_k_mask([-s for s in grasp_score], n_weights(net) - round(0.7 * n_weights(net)))
    mod = GraSPPruningModifier(PARAMS, 0.7, 0.7, start_epoch=0.0, end_epoch=0.0, num_batches=2, temperature=t)
    apply_once(mod, net, data)
    assert torch.equal(kept(net), expected)


def test_grasp_multiplies_the_hessian_by_the_masked_gradient_once_masks_are_enforced(net, data):
    """At a later update GraSP's gradient is the pruned network's, zero at the pruned weights,
    as training sees it; the Hessian couples weights, so an unmasked one changes the scores."""
    t = 200.0
    mod = GraSPPruningModifier(PARAMS, 0.7, 0.7, start_epoch=0.0, end_epoch=0.0, num_batches=2, temperature=t)
    RecipeManager([mod]).initialize(net, epoch=0.0, score_data=data)
    draw = torch.Generator().manual_seed(5)
    masks = dict(zip(PARAMS, [(torch.rand(p.shape, generator=draw) > 0.5).float() for p in mod.parameters]))
    mod.enabled = True
    mod.set_masks(list(masks.values()))
    params = {p: w.detach().clone() for p, w in net.named_parameters()}   # the pruned weights now zero
    batches = same_batches(data, 2)

    def loss(pruned, x, y):
        return data.loss(functional_call(net, {**params, **pruned}, (x,)) / t, y)

    pruned = {p: params[p] for p in PARAMS}
    g = {p: masks[p] * sum(grad(loss)(pruned, x, y)[p] for x, y in batches) / 2 for p in PARAMS}
    hg = {p: sum(jvp(lambda q: grad(loss)(q, x, y), (pruned,), (g,))[1][p] for x, y in batches) / 2 for p in PARAMS}
    for score, p in zip(mod.scores(), PARAMS):
        torch.testing.assert_close(score, params[p] * hg[p], rtol=1e-4, atol=1e-9)


def test_ws_prunes_each_layer_to_the_target_by_magnitude(net, data):
    w0 = {p: w.detach().clone() for p, w in net.named_parameters()}
    apply_once(WSPruningModifier(PARAMS, 0.6, 0.6, start_epoch=0.0, end_epoch=0.0), net, data)
    for p in PARAMS:
        w = dict(net.named_parameters())[p]
        k = w.numel() - round(0.6 * w.numel())
        assert int((w != 0).sum()) == k
        assert torch.equal((w != 0).flatten(), top_k_mask([w0[p].abs()], k))


def test_lottery_prunes_by_magnitude_and_rewinds_the_survivors(net, data):
    initial = {k: v.detach().clone() for k, v in net.state_dict().items()}
    mod = LotteryPruningModifier(PARAMS, 0.5, 0.875, start_epoch=1.0, end_epoch=3.0, update_frequency=1.0,
                                 rewind_epoch=0.0)
    manager = RecipeManager([mod])
    manager.initialize(net, epoch=0.0, score_data=data)
    # a constant share of the remaining weights goes each round: 0.5, 0.75, 0.875
    assert [mod.sparsity_targets(e)[0] for e in (1.0, 2.0, 3.0)] == pytest.approx([0.5, 0.75, 0.875])
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    wrapped = manager.modify(net, optimizer, steps_per_epoch=2)
    batches = same_batches(data, 3)
    for step, (x, y) in enumerate(batches):  # steps at epochs 0, 0.5, then 1.0, where the first round prunes
        if step == 2:
            trained = {p: dict(net.named_parameters())[p].detach().clone() for p in PARAMS}
            optimizer.param_groups[0]["lr"] = 0.0
        wrapped.zero_grad()
        data.loss(net(x), y).backward()
        wrapped.step()
    assert not torch.equal(trained["fc.weight"], initial["fc.weight"])  # training moved the weights
    expected = top_k_mask([trained[p].abs() for p in PARAMS], n_weights(net) // 2)
    assert torch.equal(kept(net), expected)
    for p in PARAMS:
        w = dict(net.named_parameters())[p]
        assert torch.equal(w, initial[p] * (w != 0))  # survivors back at their rewind values
    assert torch.equal(net.conv.bias, initial["conv.bias"])  # and so is everything else


def test_lottery_state_survives_a_restart(net, data):
    mod = LotteryPruningModifier(PARAMS, 0.5, 0.875, start_epoch=1.0, end_epoch=3.0, update_frequency=1.0)
    manager = RecipeManager([mod])
    manager.initialize(net, epoch=0.0, score_data=data)
    state = manager.state_dict()
    again = LotteryPruningModifier(PARAMS, 0.5, 0.875, start_epoch=1.0, end_epoch=3.0, update_frequency=1.0)
    other = RecipeManager([again])
    other.initialize(net, epoch=2.0, score_data=data)
    other.load_state_dict(state)
    assert torch.equal(again._rewind_state["fc.weight"], mod._rewind_state["fc.weight"])


@pytest.mark.parametrize("make, message", [
    (lambda: LotteryPruningModifier(PARAMS, 0.5, 0.9, start_epoch=1.0, end_epoch=3.0, rewind_epoch=2.0),
     "rewind_epoch"),
    (lambda: GraSPPruningModifier(PARAMS, 0.5, 0.5, start_epoch=0.0, end_epoch=0.0, temperature=0), "temperature"),
    (lambda: SNIPPruningModifier(PARAMS, 0.5, 0.5, start_epoch=0.0, end_epoch=0.0, num_batches=0), "num_batches"),
])
def test_bad_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_data_driven_modifiers_need_score_data(net):
    manager = RecipeManager([SNIPPruningModifier(PARAMS, 0.5, 0.5, start_epoch=0.0, end_epoch=0.0)])
    with pytest.raises(ValueError, match="score_data"):
        manager.initialize(net, epoch=0.0)


def test_score_batches_are_reproducible(data):
    a = next(ScoreData(data.dataset, data.loss, 16, seed=5).batches(1))
    b = next(ScoreData(data.dataset, data.loss, 16, seed=5).batches(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert np.isclose(a[0].mean().item(), b[0].mean().item())
