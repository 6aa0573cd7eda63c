"""sparsebias's recipe executor on its own: reading, schedules, masks, names, refusals."""

import copy
import textwrap
import warnings

import pytest
import torch
import torchvision
from torch import nn

from sparsebias.core import SparsebiasError
from sparsebias.pruning import GlobalMagnitudePruningModifier, PruningModifier, interpolate, nm_masks
from sparsebias.pruning.magnitude import unstructured_masks
from sparsebias.recipes import RecipeManager, load_recipe, parse_overrides


def write(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


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


def test_interpolation_by_hand():
    assert interpolate(1.0, 0.0, 2.0, 0.0, 0.8, "linear") == pytest.approx(0.4)
    assert interpolate(1.0, 0.0, 2.0, 0.0, 0.8, "cubic") == pytest.approx(0.8 * (1 - 0.5 ** 3))
    assert interpolate(1.0, 0.0, 2.0, 0.0, 0.8, "inverse_cubic") == pytest.approx(0.8 * (1 - 0.5 ** (1 / 3)))
    assert interpolate(0.0, 0.0, 2.0, 0.1, 0.8, "cubic") == 0.1
    assert interpolate(2.5, 0.0, 2.0, 0.1, 0.8, "inverse_cubic") == 0.8   # past the end (sparseml: complex)
    assert interpolate(3.0, 3.0, 3.0, 0.1, 0.8, "cubic") == 0.8           # one shot (sparseml: ZeroDivisionError)


def test_unstructured_ties_and_global_ranking_by_hand():
    # threshold 2 is tied: of the three 2s, the first (index order) stays, so exactly 3 of 6 go
    (mask,) = unstructured_masks([torch.tensor([2., 5., 2., 1., 2., 7.])], [0.5], False)
    assert mask.tolist() == [1., 1., 0., 0., 0., 1.]
    a, b = unstructured_masks([torch.tensor([1., 9.]), torch.tensor([3., 4., 0.5, 8.])], [0.5, 0.5], True)
    assert a.tolist() == [0., 1.] and b.tolist() == [0., 1., 0., 1.]


def test_unquoted_nm_and_anchored_overrides(tmp_path):
    text = """
        num_epochs: &num_epochs 6
        modifiers:
          - !EpochRangeModifier
            start_epoch: 0.0
            end_epoch: *num_epochs
          - !GMPruningModifier
            params: ["re:layer1.*conv1.weight"]
            init_sparsity: 0.5
            final_sparsity: 0.5
            start_epoch: 1.0
            end_epoch: *num_epochs
            update_frequency: 1.0
            mask_type: {mask}
        """
    unquoted = load_recipe(write(tmp_path, text.format(mask="2:4"), "a.yaml"), {"num_epochs": 3})
    quoted = load_recipe(write(tmp_path, text.format(mask='"2:4"'), "b.yaml"))
    (mod,) = unquoted.pruning_modifiers
    assert mod.mask_type.nm == quoted.pruning_modifiers[0].mask_type.nm == (2, 4)
    assert unquoted.epochs == 3 and mod.end_epoch == 3.0     # the override reached both aliases
    assert quoted.epochs == 6
    assert parse_overrides(["mask_type=2:4", "num_epochs=3"]) == {"mask_type": "2:4", "num_epochs": 3}


def _one_shot_pruning(tmp_path, params: list[str], extra: str = ""):
    """The GMPruningModifier of a recipe that prunes `params` to 80% at its start."""
    path = write(tmp_path, f"""
        modifiers:
          - !EpochRangeModifier
            start_epoch: 0.0
            end_epoch: 1.0
          - !GMPruningModifier
            params: {params}
            init_sparsity: 0.8
            final_sparsity: 0.8
            start_epoch: 0.0
            end_epoch: 0.0
            update_frequency: -1
            {extra}
        """)
    (mod,) = load_recipe(path).pruning_modifiers
    return mod


def test_sparseml_resnet_names_reach_torchvision_layers(tmp_path):
    mod = _one_shot_pruning(tmp_path, ["sections.0.0.conv1.weight", "re:sections.1.0.identity.conv.weight",
                                       "input.conv.weight", "classifier.fc.weight"])
    mod.initialize(torchvision.models.resnet18(num_classes=3))
    assert mod.names == ["conv1.weight", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight", "fc.weight"]


def test_sparseml_mobilenet_names_reach_our_mobilenet_v1(tmp_path):
    from sparsebias.training.models import build_model

    mod = _one_shot_pruning(tmp_path, ["input.conv.weight", "sections.0.0.point.conv.weight",
                                       "sections.1.1.depth.conv.weight", "sections.3.5.point.conv.weight",
                                       "sections.4.0.point.conv.weight", "classifier.fc.weight"],
                            extra="mask_type: [1, 4]")
    mod.initialize(build_model("mobilenet_v1", 3))
    # SparseML's sections hold 1, 2, 2, 6 and 2 blocks (a section per output width)
    assert mod.names == ["features.0.0.weight", "features.1.1.0.weight", "features.3.0.0.weight",
                         "features.11.1.0.weight", "features.12.1.0.weight", "classifier.weight"]


def test_a_name_the_model_lacks_shows_the_nearest(tmp_path):
    from sparsebias.recipes import check_recipe_against_model
    from sparsebias.training.models import build_model

    path = write(tmp_path, """
        modifiers:
          - !EpochRangeModifier
            start_epoch: 0.0
            end_epoch: 2.0
          - !GMPruningModifier
            params: ["layer1.0.conv3.weight"]
            init_sparsity: 0.05
            final_sparsity: 0.8
            start_epoch: 0.0
            end_epoch: 1.0
            update_frequency: 0.5
        """)
    with pytest.raises(SparsebiasError, match=r"params 'layer1.0.conv3.weight' matches no parameter of resnet18; "
                                              r"nearest: layer1.0.conv1.weight, layer1.0.conv2.weight"):
        check_recipe_against_model(load_recipe(path), build_model("resnet18", 3), "resnet18")


@pytest.mark.parametrize("text, message", [
    ("stage_0:\n  stage_0_modifiers:\n    - 5\n", "'stage_0_modifiers' lists 5, which is not a !Modifier"),
    ("modifiers:\n  - !MFACPruningModifier\n    params: __ALL_PRUNABLE__\n",
     r"recipe.yaml:2: !MFACPruningModifier \(M-FAC pruning\) is not supported"),
    ("x: 1\nmodifiers:\n  - !EpochRangeModifier\n    start_epoch: 0\n    end_epoch: eval(x + y)\n",
     r"recipe.yaml:3: EpochRangeModifier: unknown variable y"),
    ("modifiers:\n  - !EpochRangeModifier\n    start_epoch: 0\n    end_epoch: eval(__import__('os'))\n",
     "unsupported expression"),
    ("modifiers:\n  - !GMPruningModifier\n    params: __ALL_PRUNABLE__\n    init_sparsity: 0.1\n"
     "    final_sparsity: 0.5\n    start_epoch: 0\n    end_epoch: 1\n    update_frequency: 1\n    mask_type: 3:5:7\n",
     "unknown mask_type"),
    ("modifiers:\n  - !LearningRateFunctionModifier\n    lr_func: exp\n    init_lr: 0.1\n    final_lr: 0.0\n"
     "    start_epoch: 0\n    end_epoch: 2\n", "lr_func 'exp' is not one of linear, cosine, cyclic_linear"),
    # nan passes every comparison that checks a schedule; inf (or 1e400) overflows the epoch count
    ("modifiers:\n  - !EpochRangeModifier\n    start_epoch: 0\n    end_epoch: .nan\n",
     "EpochRangeModifier: end_epoch must be a finite number, got nan"),
    ("modifiers:\n  - !EpochRangeModifier\n    start_epoch: 0\n    end_epoch: 1e400\n",
     "EpochRangeModifier: end_epoch must be a finite number, got inf"),
    ("n: nan\nmodifiers:\n  - !EpochRangeModifier\n    start_epoch: 0\n    end_epoch: eval(n)\n",
     "EpochRangeModifier: end_epoch must be a finite number"),
    ("modifiers:\n  - !GraSPPruningModifier\n    params: __ALL_PRUNABLE__\n    init_sparsity: 0.1\n"
     "    final_sparsity: 0.5\n    start_epoch: 0\n    end_epoch: 1\n    update_frequency: 1\n    temperature: hot\n",
     "GraSPPruningModifier: temperature must be a number, got 'hot'"),
    ("modifiers:\n  - !LotteryPruningModifier\n    params: __ALL_PRUNABLE__\n    init_sparsity: 0.1\n"
     "    final_sparsity: 0.5\n    start_epoch: 0\n    end_epoch: 1\n    update_frequency: 1\n    rewind_epoch: .nan\n",
     "LotteryPruningModifier: rewind_epoch must be a finite number, got nan"),
])
def test_refused_in_one_line(tmp_path, text, message):
    with pytest.raises(SparsebiasError, match=message) as caught:
        load_recipe(write(tmp_path, text))
    assert "\n" not in str(caught.value)


CYCLIC = """
    modifiers:
      - !EpochRangeModifier
        start_epoch: 0.0
        end_epoch: 4.0
      - !LearningRateFunctionModifier
        lr_func: cyclic_linear
        init_lr: 0.1
        final_lr: 0.01
        cycle_epochs: 1.0
        start_epoch: 0.0
        end_epoch: 4.0
      - !GlobalMagnitudePruningModifier
        params: __ALL_PRUNABLE__
        init_sparsity: 0.1
        final_sparsity: 0.7
        start_epoch: 0.5
        end_epoch: 3.0
        update_frequency: 0.5
    """


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))


def _run(manager, model, steps, start=0, state=None, optimizer_state=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    manager.initialize(model, epoch=start / 4)
    if state:
        manager.load_state_dict(state)
    if optimizer_state:
        optimizer.load_state_dict(copy.deepcopy(optimizer_state))  # load_state_dict may alias its tensors
    wrapped = manager.modify(model, optimizer, steps_per_epoch=4, epoch=start / 4)
    lrs, g = [], torch.Generator().manual_seed(start)
    for _ in range(steps):
        loss = model(torch.randn(3, 5, generator=g)).pow(2).mean()
        wrapped.zero_grad()
        loss.backward()
        wrapped.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs, optimizer


def test_cyclic_linear_restarts_every_cycle(tmp_path):
    model = _net()
    lrs, _ = _run(load_recipe(write(tmp_path, CYCLIC)).manager, model, 16)
    assert lrs[:4] == pytest.approx([0.1, 0.07, 0.04, 0.01]) and lrs[4:8] == pytest.approx(lrs[:4])
    assert sum(int((p == 0).sum()) for p in model.parameters() if p.dim() == 2) == round(0.7 * (80 + 32))


MULTISTEP = """
    training_modifiers:
      - !EpochRangeModifier {start_epoch: 0.0, end_epoch: 3.0}
      - !LearningRateModifier
        start_epoch: 0.0
        end_epoch: -1.0
        lr_class: MultiStepLR
        lr_kwargs: {'milestones': [1, 2], 'gamma': 0.1}
        init_lr: 0.05
        update_frequency: -1.0
"""


def test_multistep_lr_follows_its_milestones_without_torch_warning_of_a_skipped_step(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lrs, _ = _run(load_recipe(write(tmp_path, MULTISTEP)).manager, _net(), 12)
    assert lrs == pytest.approx([0.05] * 4 + [0.005] * 4 + [0.0005] * 4)


def test_a_manager_rebuilt_from_its_state_continues_identically(tmp_path):
    path = write(tmp_path, CYCLIC)
    straight, manager = _net(), load_recipe(path).manager
    _, optimizer = _run(manager, straight, 6)
    state, optimizer_state = copy.deepcopy(manager.state_dict()), copy.deepcopy(optimizer.state_dict())  # as on disk
    masks = [m for modifier in state.values() for m in modifier.get("masks", {}).values()]
    assert masks and all(m.dtype == torch.bool for m in masks)   # a quarter of float's space in a checkpoint
    resumed = _net()
    resumed.load_state_dict(straight.state_dict())
    older = copy.deepcopy(state)   # as checkpoints before masks were saved as bool held them
    for modifier in older.values():
        if "masks" in modifier:
            modifier["masks"] = {name: m.float() for name, m in modifier["masks"].items()}
    from_older = _net()
    from_older.load_state_dict(straight.state_dict())
    _run(load_recipe(path).manager, resumed, 10, start=6, state=state, optimizer_state=optimizer_state)
    _run(load_recipe(path).manager, from_older, 10, start=6, state=older, optimizer_state=optimizer_state)
    _run(manager, straight, 10, start=6, optimizer_state=optimizer_state)   # the same manager, uninterrupted
    for a, b, c in zip(straight.parameters(), resumed.parameters(), from_older.parameters()):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_a_staged_recipe_runs_every_stage_and_takes_overrides_of_stage_variables(repo):
    card = repo / "tests/fixtures/cards/staged.md"
    recipe = load_recipe(card, {"pruning_end": 2.0})
    names = [type(m).__name__ for m in recipe.manager.modifiers]
    assert names.index("GlobalMagnitudePruningModifier") < names.index("ConstantPruningModifier")  # stage order
    (gmp,) = recipe.pruning_modifiers
    assert gmp.end_epoch == 2.0 and recipe.epochs == 5
    with pytest.raises(SparsebiasError, match="cannot set 'pruning_ends'"):
        load_recipe(card, {"pruning_ends": 2.0})


def test_a_state_of_another_recipe_is_refused_in_one_line(tmp_path):
    manager = load_recipe(write(tmp_path, CYCLIC)).manager
    manager.initialize(_net())
    sparseml_style = {"GlobalMagnitudePruningModifier-3f2a": {"0.weight.sparsity_mask": torch.ones(16, 5)}}
    with pytest.raises(SparsebiasError, match="recipe state does not fit this recipe.*without --resume"):
        manager.load_state_dict(sparseml_style)


def test_pruned_weights_keep_no_optimizer_state_and_the_kept_weights_train_as_before(tmp_path, monkeypatch):
    """A decaying momentum of a pruned weight stalls at float32's smallest denormals, which
    slow every CPU step; it is zeroed at each mask change instead, which moves no kept weight."""
    path = write(tmp_path, CYCLIC)
    model, manager = _net(), load_recipe(path).manager
    _, optimizer = _run(manager, model, 16)
    pruning = next(m for m in manager.modifiers if m.masks)
    pruned = [(optimizer.state[p]["momentum_buffer"], m == 0) for p, m in zip(pruning.parameters, pruning.masks)]
    assert sum(int(gone.sum()) for _, gone in pruned) == round(0.7 * (80 + 32))
    assert all(torch.equal(buffer[gone], torch.zeros_like(buffer[gone])) for buffer, gone in pruned)
    assert all(bool((buffer[~gone] != 0).all()) for buffer, gone in pruned)

    monkeypatch.setattr(type(pruning), "_zero_pruned_state", lambda self, optimizer: None)
    unchanged = _net()
    _run(load_recipe(path).manager, unchanged, 16)
    for a, b in zip(model.parameters(), unchanged.parameters()):
        assert torch.equal(a, b)


def test_a_resumed_run_drops_the_denormal_state_an_older_checkpoint_holds(tmp_path):
    path = write(tmp_path, CYCLIC)
    first, manager = _net(), load_recipe(path).manager
    _, optimizer = _run(manager, first, 16)
    state, optimizer_state = copy.deepcopy(manager.state_dict()), copy.deepcopy(optimizer.state_dict())
    pruning = next(m for m in manager.modifiers if m.masks)
    index = {id(p): i for i, p in enumerate(first.parameters())}   # the optimizer's order
    for param, mask in zip(pruning.parameters, pruning.masks):
        optimizer_state["state"][index[id(param)]]["momentum_buffer"][mask == 0] = 5.6e-45   # where 0.9 x stalls
    resumed = _net()
    resumed.load_state_dict(first.state_dict())
    _, optimizer = _run(load_recipe(path).manager, resumed, 1, start=16, state=state, optimizer_state=optimizer_state)
    buffers = [b["momentum_buffer"] for b in optimizer.state.values()]
    assert not any(bool(((b != 0) & (b.abs() < torch.finfo(torch.float32).tiny)).any()) for b in buffers)


@pytest.mark.parametrize("make_optimizer", [
    lambda ps: torch.optim.SGD(ps, lr=0.5, momentum=0.9, weight_decay=0.1, nesterov=True),
    lambda ps: torch.optim.Adam(ps, lr=0.05, weight_decay=0.1),
    lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.1),
], ids=["sgd", "adam", "adamw"])
def test_pruned_weights_are_zero_after_every_step_without_being_masked_at_every_step(tmp_path, monkeypatch,
                                                                                     make_optimizer):
    """Masks are applied at mask changes only: with their gradients masked and their optimizer
    state zeroed, steps leave pruned weights at zero, and every weight ends bit for bit where
    masking after every step (SparseML's way) leaves it."""
    def train(model):
        manager = load_recipe(write(tmp_path, CYCLIC)).manager
        optimizer = make_optimizer(model.parameters())
        manager.initialize(model)
        wrapped = manager.modify(model, optimizer, steps_per_epoch=4)
        pruning = next(m for m in manager.modifiers if isinstance(m, PruningModifier))
        g = torch.Generator().manual_seed(0)
        for _ in range(16):
            loss = model(torch.randn(3, 5, generator=g)).pow(2).mean()
            wrapped.zero_grad()
            loss.backward()
            wrapped.step()
            assert all(bool((p[m == 0] == 0).all()) for p, m in zip(pruning.parameters, pruning.masks))
        return pruning

    model = _net()
    pruning = train(model)
    assert sum(int((m == 0).sum()) for m in pruning.masks) == round(0.7 * (80 + 32))
    post_step = PruningModifier.optimizer_post_step

    def every_step(self, *args):
        self.apply()
        post_step(self, *args)
    monkeypatch.setattr(PruningModifier, "optimizer_post_step", every_step)
    masked_every_step = _net()
    train(masked_every_step)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), masked_every_step.parameters()))


def test_masks_keep_their_weights_memory_format_and_mask_gradients_in_place_before_the_step():
    """A mask strided as its weight lets the gradient be masked in place at memory speed; the
    masked gradient is the one the optimizer steps with (momentum of pruned weights stays zero)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruning = GlobalMagnitudePruningModifier(0.5, 0.5, 0.0, 0.0, -1.0, params=["re:.*weight"])
    wrapped = RecipeManager([pruning]).modify(model, optimizer, steps_per_epoch=2)
    for _ in range(3):
        wrapped.zero_grad()
        model(torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)).pow(2).mean().backward()
        wrapped.step()
    assert sum(int((m == 0).sum()) for m in pruning.masks) == (8 * 3 * 9 + 4 * 8 * 9) // 2
    for param, mask in zip(pruning.parameters, pruning.masks):
        assert mask.stride() == param.stride() and param.is_contiguous(memory_format=torch.channels_last)
        assert bool((param.grad[mask == 0] == 0).all())
        assert bool((optimizer.state[param]["momentum_buffer"][mask == 0] == 0).all())
