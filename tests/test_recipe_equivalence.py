"""sparsebias's recipe executor against sparseml 1.8, the same model, recipe, data and seed.

At every optimizer step the learning rate, and every pruned parameter's mask, must be
identical; so must the weights at the end. Skipped where sparseml is not installed (the
current-stack profile); the executor's own tests run everywhere.
"""

from pathlib import Path

import pytest
import torch
import torchvision

from sparsebias.pruning import PruningModifier
from sparsebias.recipes import load_recipe
from sparsebias.recipes.reader import recipe_yaml

oracle = pytest.importorskip("sparseml_oracle", reason="sparseml 1.8 is not installed (Python 3.11 profile only)")

ROOT = Path(__file__).resolve().parents[1]
CARDS = sorted((ROOT / "tests/fixtures/cards").glob("*.md"))
OURS = [ROOT / "recipes" / f"{n}.yaml" for n in ("resnet18_dense", "resnet18_90", "resnet18_99_5", "resnet18_pt_95",
                                                   "resnet18_nm_2_4", "resnet18_nm_1_8")]
STEPS_PER_EPOCH = 3


def _model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=4)


def _masks(modifiers, ours: bool) -> dict:
    out = {}
    for mod in modifiers:
        if ours and isinstance(mod, PruningModifier) and mod.enabled:
            out.update({n: m for n, m in zip(mod.names, mod.masks)})
        elif not ours and hasattr(mod, "module_masks") and mod.module_masks is not None and mod.module_masks.enabled:
            masks = mod.module_masks
            out.update({f"{layer}.{p}": m for layer, p, m in zip(masks.layer_names, masks.param_names, masks.param_masks)})
    return out


def _drive(path, overrides):
    recipe = load_recipe(path, overrides)
    text, _ = recipe_yaml(path, path.read_text())
    theirs = oracle.manager_from(text, {k: v for k, v in overrides.items() if k in recipe.variables})
    ours_model, their_model = _model(), _model()
    runs = []
    for model, manager, is_ours in ((ours_model, recipe.manager, True), (their_model, theirs, False)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        kwargs = {} if is_ours else {"loggers": oracle.quiet_loggers()}
        manager.initialize(model, epoch=0.0, **kwargs)
        runs.append((model, manager, manager.modify(model, optimizer, steps_per_epoch=STEPS_PER_EPOCH), optimizer,
                     is_ours))
    assert recipe.epochs == theirs.max_epochs
    data = torch.Generator().manual_seed(1)
    for step in range(recipe.epochs * STEPS_PER_EPOCH):
        x = torch.randn(2, 3, 32, 32, generator=data)
        y = torch.rand(2, 4, generator=data).round()
        seen = []
        for model, manager, wrapped, optimizer, is_ours in runs:
            model.train()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
            wrapped.zero_grad()
            loss.backward()
            wrapped.step()
            seen.append(([g["lr"] for g in optimizer.param_groups], [g["weight_decay"] for g in optimizer.param_groups],
                         _masks(manager.iter_modifiers(), is_ours)))
        (lr, wd, masks), (their_lr, their_wd, their_masks) = seen
        assert lr == their_lr, f"learning rate at step {step}"
        assert wd == their_wd, f"weight decay at step {step}"
        assert masks.keys() == their_masks.keys(), f"pruned parameters at step {step}"
        for name in masks:
            assert torch.equal(masks[name], their_masks[name]), f"mask of {name} at step {step}"
    for (model, manager, *_rest) in runs:
        manager.finalize(model)
    for (name, ours), theirs in zip(ours_model.state_dict().items(), their_model.state_dict().values()):
        assert torch.equal(ours, theirs), name
    return ours_model


RUNS = [(p, {}) for p in CARDS] + [(p, {"num_epochs": 5}) for p in OURS] + [
    (ROOT / "recipes/resnet18_layerwise_95.yaml", {"num_epochs": 5, "mask_type": "block4"})]


@pytest.mark.parametrize("path, overrides", RUNS, ids=lambda v: v.stem if isinstance(v, Path) else
                         ",".join(f"{k}={x}" for k, x in v.items()))
def test_same_schedule_masks_and_weights_as_sparseml(path, overrides):
    model = _drive(path, overrides)
    zeros = sum(int((p == 0).sum()) for n, p in model.named_parameters() if n.endswith("weight"))
    assert (zeros > 0) == ("dense" not in path.stem)


@pytest.mark.parametrize("mask_type", ["unstructured", "block4", [1, 4], [4, 1], [2, 2], "2:4"])
@pytest.mark.parametrize("global_sparsity", [False, True])
def test_mask_creators_agree_with_sparseml(mask_type, global_sparsity):
    from sparseml.pytorch.sparsification.pruning.mask_creator import get_mask_creator_default

    from sparsebias.pruning.magnitude import MaskType

    if global_sparsity and mask_type == "2:4":
        pytest.skip("N:M is per tensor")
    g = torch.Generator().manual_seed(3)
    # rounded values make ties, and zeros exercise sparseml's minimum branch
    tensors = [(torch.randn(shape, generator=g) * 4).round().abs() for shape in [(8, 12, 3, 3), (16, 8, 1, 1), (4, 24)]]
    tensors[1][:4] = 0.0
    for target in ([[0.5] * 3] if mask_type == "2:4" else [[s] * 3 for s in (0.3, 0.7)] if global_sparsity
                   else [[0.3, 0.55, 0.8]]):
        theirs = get_mask_creator_default(mask_type if isinstance(mask_type, str) else list(mask_type))
        expected = theirs.create_sparsity_masks([t.clone() for t in tensors], list(target), global_sparsity)
        ours = MaskType(mask_type).masks([t.clone() for t in tensors], list(target), global_sparsity)
        for a, b in zip(ours, expected):
            assert torch.equal(a, b.to(a.dtype))
