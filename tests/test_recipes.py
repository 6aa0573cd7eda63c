"""Every recipe in recipes/ is a SparseML recipe that reaches its sparsity on its model."""

import re
import textwrap
from pathlib import Path

import pytest
import torch

from sparsebias.core import SparsebiasError
from sparsebias.recipes import check_recipe_against_model, load_recipe, parse_overrides
from sparsebias.training.models import build_model, prunable_weights

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def run_schedule(recipe, model, steps_per_epoch=2, image_size=32):
    """Drive the recipe's whole schedule with a couple of random batches per epoch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    recipe.manager.initialize(model, epoch=0.0)
    wrapped = recipe.manager.modify(model, optimizer, steps_per_epoch=steps_per_epoch)
    model.train()
    for _ in range(recipe.epochs * steps_per_epoch):
        logits = model(torch.randn(4, 3, image_size, image_size))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.rand_like(logits).round())
        wrapped.zero_grad()
        loss.backward()
        wrapped.step()
    recipe.manager.finalize(model)


def expected_sparsity(recipe, model):
    """Share of zeros the recipe's modifiers should leave over the model's prunable weights."""
    weights = prunable_weights(model)
    total = sum(w.numel() for w in weights.values())
    zeros = 0.0
    for mod in recipe.pruning_modifiers:
        names = [n for n in weights if any(p == "__ALL_PRUNABLE__" or n == p or p.startswith("re:") and re.match(p[3:], n)
                                           for p in mod.params)]
        zeros += mod.final_sparsity * sum(weights[n].numel() for n in names)
    return zeros / total


def test_there_is_a_recipe_for_each_documented_setting():
    names = {p.stem for p in RECIPES}
    for stem in ["resnet18_dense", "resnet18_80", "resnet18_90", "resnet18_95", "resnet18_98", "resnet18_99",
                 "resnet18_99_5", "resnet18_pt_95", "resnet18_nm_2_4", "resnet18_nm_1_4", "resnet18_nm_1_8",
                 "mobilenet_v2_dense", "mobilenet_v2_90", "mobilenet_v1_dense", "mobilenet_v1_90"]:
        assert stem in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_reaches_its_target_sparsity(path):
    recipe = load_recipe(path, {"num_epochs": 6} if "num_epochs" in path.read_text() else {})
    torch.manual_seed(0)
    model = build_model(recipe.settings["arch"], 40)
    check_recipe_against_model(recipe, model, recipe.settings["arch"])
    run_schedule(recipe, model)
    weights = prunable_weights(model)
    assert all(torch.isfinite(w).all() for w in weights.values())
    measured = sum(int((w == 0).sum()) for w in weights.values()) / sum(w.numel() for w in weights.values())
    assert measured == pytest.approx(expected_sparsity(recipe, model), abs=0.005)


@pytest.mark.parametrize("path", [p for p in RECIPES if "\nmask_type: unstructured" in p.read_text()],
                         ids=lambda p: p.stem)
def test_block4_override_prunes_four_input_channels_together(path):
    recipe = load_recipe(path, {"num_epochs": 2, "mask_type": "block4"})
    torch.manual_seed(0)
    model = build_model(recipe.settings["arch"], 40)
    run_schedule(recipe, model)
    pruned = {n: w for n, w in prunable_weights(model).items() if n.startswith("layer")}
    for name, weight in pruned.items():
        blocks = (weight == 0).movedim(1, -1).reshape(-1, 4)   # 4 consecutive input channels
        assert bool((blocks.all(dim=1) | ~blocks.any(dim=1)).all()), name
        assert float(blocks.float().mean()) == pytest.approx(0.95, abs=0.01), name


def write(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


GMP = """
num_epochs: 4
modifiers:
  - !EpochRangeModifier
    start_epoch: 0.0
    end_epoch: eval(num_epochs)
  - !GlobalMagnitudePruningModifier
    params: {params}
    init_sparsity: {init}
    final_sparsity: {sparsity}
    start_epoch: 0
    end_epoch: 2
    update_frequency: 1
    mask_type: {mask}
"""


def test_run_settings_come_from_variables_defaults_and_overrides(tmp_path):
    path = write(tmp_path, "arch: mobilenet_v2\ninit_lr: 0.05\n" + GMP.format(
        params="__ALL_PRUNABLE__", init=0.05, sparsity=0.9, mask="unstructured"))
    recipe = load_recipe(path, parse_overrides(["num_epochs=7", "batch_size=16"]))
    assert recipe.settings["arch"] == "mobilenet_v2"
    assert recipe.settings["init_lr"] == 0.05
    assert recipe.settings["batch_size"] == 16
    assert recipe.settings["image_size"] == 64  # default
    assert recipe.epochs == 7  # the override reached SparseML's eval()
    assert recipe.pruning_end_epoch == 2


def test_markdown_recipe_with_front_matter(tmp_path):
    body = GMP.format(params="__ALL_PRUNABLE__", init=0.05, sparsity=0.8, mask="unstructured")
    path = write(tmp_path, f"---\n{body.strip()}\n---\n\n# A recipe\nProse here.\n", "recipe.md")
    assert load_recipe(path).pruning_modifiers[0].final_sparsity == 0.8


EPOCHS = "modifiers:\n  - !EpochRangeModifier\n    start_epoch: 0\n    end_epoch: 2\n"


@pytest.mark.parametrize("text, message", [
    ("modifiers:\n  - !EpochRangeModifier\n    end_epoch: [1\n", r"recipe.yaml:4: YAML error"),
    ("modifiers:\n  - !EpochRangeModifier\n    end_epoch: 2\n  - !MagicPruner\n    final_sparsity: 0.5\n",
     r"recipe.yaml:4: unknown modifier !MagicPruner; supported: ConstantPruningModifier, EpochRangeModifier"),
    ("modifiers:\n  - !EpochRangeModifier\n    end_epoch: 2\n", r"recipe.yaml:2: EpochRangeModifier needs 'start_epoch'"),
    ("modifiers:\n  - !MFACPruningModifier\n    start_epoch: 0\n",
     r"recipe.yaml:2: !MFACPruningModifier \(M-FAC pruning\) is not supported by sparsebias's recipe executor"),
    (GMP.format(params="__ALL_PRUNABLE__", init=0.9, sparsity=0.9, mask='"2:4"'),
     r"mask_type 2:4 needs sparsity 0.5 \(1 - N/M\), got 0.9"),
    ("modifiers:\n  - !EpochRangeModifier\n    end_epoch: 2\n    final_sparsty: 1\n",
     r"recipe.yaml:2: EpochRangeModifier has no argument 'final_sparsty' \(its arguments: start_epoch, end_epoch\)"),
    ("optimizer: rmsprop\nmodifiers:\n  - !EpochRangeModifier\n    start_epoch: 0\n    end_epoch: 2\n",
     "optimizer 'rmsprop' is not one of sgd, adam"),
    ("precision: fp8\nmodifiers:\n  - !EpochRangeModifier\n    start_epoch: 0\n    end_epoch: 2\n",
     "precision 'fp8' is not one of auto, fp32, bf16"),
    ("small_maps: onednn\nmodifiers:\n  - !EpochRangeModifier\n    start_epoch: 0\n    end_epoch: 2\n",
     "small_maps 'onednn' is not one of product, torch"),
    ("init_lr: .nan\n" + EPOCHS, r"init_lr must be a finite non-negative number, got nan"),
    ("weight_decay: .inf\n" + EPOCHS, r"weight_decay must be a finite non-negative number, got inf"),
    ("batch_size: true\n" + EPOCHS, r"batch_size must be a positive integer, got True"),
    ("arch: resnet18\n", "Unable to find any modifiers"),
    ("end: eval(epochs / 2)\nepochs: many\n" + EPOCHS, r"variable end: cannot evaluate eval\(epochs / 2\): epochs is 'many', not a number"),
    ("end: eval(start + epochs)\nstart: 0\n" + EPOCHS, r"variable end: cannot evaluate eval\(start \+ epochs\): epochs is not defined"),
    ("end: eval(a)\na: eval(b + 1)\nb: eval(a * 2)\n" + EPOCHS, r"variable end: .*the variables form a cycle: a -> b -> a"),
    ("- just\n- a list\n", "a recipe is a YAML mapping"),
    # integer arithmetic that would run for hours, and Python's argument errors
    ("x: eval(9 ** 9 ** 9)\n" + EPOCHS, r"arithmetic error: 9 \*\* 9 \*\* 9 is larger than 2\*\*1024"),
    ("a: eval(2 ** 600)\nb: eval(a * a)\nc: eval(b * b)\n" + EPOCHS, r"arithmetic error: a \* a is larger than 2\*\*1024"),
    ("x: eval(int(1e400))\n" + EPOCHS, r"arithmetic error in int\(1e\d+\): cannot convert float infinity"),
    ("x: eval(min())\n" + EPOCHS, r"arithmetic error in min\(\): min expected at least 1 argument"),
    ("x: eval(round(1.5, 2, 3))\n" + EPOCHS, r"arithmetic error in round\(1.5, 2, 3\):"),
    ("stage:\n  pruning_modifiers:\n    MagnitudePruningModifier:\n      final_sparsity: 0.5\n",
     r"'pruning_modifiers' names MagnitudePruningModifier as a plain key, the SparseML 2 / llm-compressor form"),
    ("modifiers:\n  - {note: " + "x" * 200 + "}\n",
     r"'modifiers' lists \{'note': 'x{47}\.\.\., which is not a !Modifier$"),
    ("modifiers:\n  - !EpochRangeModifier\n    start_epoch: -2\n    end_epoch: 2\n",
     r"start_epoch and end_epoch must be -1 or at least 0 \(got -2 and 2\)"),
])
def test_malformed_recipes(tmp_path, text, message):
    with pytest.raises(SparsebiasError, match=message):
        load_recipe(write(tmp_path, text))


def test_missing_recipe(tmp_path):
    with pytest.raises(SparsebiasError, match="recipe not found: .*nope.yaml"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize("params, mask, message", [
    ('["re:layer9.*weight"]', "unstructured", r"params 're:layer9.\*weight' matches no parameter of resnet18; nearest: layer1.0.conv1.weight"),
    ('["conv1.weight"]', '"2:4"', "includes conv1.weight with 3 input channels, not a multiple of 4"),
])
def test_patterns_are_checked_against_the_model(tmp_path, params, mask, message):
    sparsity = 0.5 if ":" in mask else 0.9
    recipe = load_recipe(write(tmp_path, GMP.format(params=params, init=sparsity, sparsity=sparsity, mask=mask)))
    with pytest.raises(SparsebiasError, match=message):
        check_recipe_against_model(recipe, build_model("resnet18", 3), "resnet18")


def test_unknown_override_is_refused(tmp_path):
    path = write(tmp_path, GMP.format(params="__ALL_PRUNABLE__", init=0.05, sparsity=0.9, mask="unstructured"))
    with pytest.raises(SparsebiasError, match="cannot set 'num_epoch': not a variable of this recipe"):
        load_recipe(path, {"num_epoch": 3})


def test_settings_may_be_sparseml_equations(tmp_path):
    path = write(tmp_path, "base_lr: 0.02\ninit_lr: eval(base_lr * 2)\nbatch_size: 32.0\n" + GMP.format(
        params="__ALL_PRUNABLE__", init=0.05, sparsity=0.9, mask="unstructured"))
    recipe = load_recipe(path, {"base_lr": 0.05})
    assert recipe.settings["init_lr"] == pytest.approx(0.1)
    assert recipe.settings["batch_size"] == 32 and isinstance(recipe.settings["batch_size"], int)


GROUP_RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes" / "groups").glob("*.yaml"))


class GroupImages(torch.utils.data.Dataset):
    """Random 32 px images labelled with gender (2) and race (7; two occur, so four groups), as
    FaceImages gives them."""

    def __init__(self, n=32):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        self.columns = torch.stack([torch.arange(n) % 2, torch.arange(n) // 2 % 2], dim=1)
        self.labels, self.column_names = self.columns, ("gender", "race")

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("path", GROUP_RECIPES, ids=lambda p: p.stem)
def test_group_recipe_reaches_its_sparsity_on(path, arch):
    from sparsebias.core import Outputs
    from sparsebias.pruning import ScoreData

    recipe = load_recipe(path, {"num_epochs": 5, "arch": arch})
    torch.manual_seed(0)
    outputs = Outputs(("gender", "race"), (("F", "M"), tuple("abcdefg")))
    model = build_model(arch, outputs.size)
    check_recipe_against_model(recipe, model, arch)
    data = GroupImages()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    recipe.manager.initialize(model, epoch=0.0,
                              score_data=ScoreData(data, outputs.loss(), 4, seed=0))
    wrapped = recipe.manager.modify(model, optimizer, steps_per_epoch=2)
    model.train()
    for x, y in ScoreData(data, outputs.loss(), 4, seed=1).batches(recipe.epochs * 2):
        loss = outputs.loss()(model(x), y)
        wrapped.zero_grad()
        loss.backward()
        wrapped.step()
    recipe.manager.finalize(model)
    weights = prunable_weights(model)
    measured = sum(int((w == 0).sum()) for w in weights.values()) / sum(w.numel() for w in weights.values())
    assert measured == pytest.approx(expected_sparsity(recipe, model), abs=0.005)
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_layer_wise_sparsity_that_empties_a_layer_is_refused(tmp_path):
    path = write(tmp_path, """
        arch: mobilenet_v2
        modifiers:
          - !EpochRangeModifier
            start_epoch: 0.0
            end_epoch: 2.0
          - !WSPruningModifier
            params: ["features.0.0.weight"]
            init_sparsity: 0.5
            final_sparsity: 0.9995
            start_epoch: 0.0
            end_epoch: 1.0
            update_frequency: 0.5
        """)
    recipe = load_recipe(path)
    with pytest.raises(SparsebiasError, match=r"WSPruningModifier cannot reach sparsity 0.9995 layer by layer: "
                                              r"features.0.0.weight has 864 weights and would keep none"):
        check_recipe_against_model(recipe, build_model("mobilenet_v2", 9), "mobilenet_v2")


def test_sensitive_columns_must_be_labels_with_two_values(tmp_path):
    from click.testing import CliRunner

    from sparsebias.cli import main

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "groups" / "fairgrape.yaml"
    args = ["compress", "--recipe", str(recipe), "--data", "synthfaces:train=60,val=10,test=30,size=16,groups=1",
            "--attributes", "gender,race", "--out", str(tmp_path), "--set", "arch=resnet18", "--set", "image_size=16"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("sensitive: [gender, race]", "sensitive: [gender, ethnicity]"))
    result = CliRunner().invoke(main, [*args[:2], str(bad), *args[3:]])
    assert result.exit_code == 2
    assert "FairGRAPEPruningModifier sensitive column 'ethnicity' is not a label" in result.output
    assert not (tmp_path / "bad").exists()
