"""Load and check SparseML recipes, and read sparsebias's run settings out of them.

A recipe is a SparseML YAML recipe (or Markdown with YAML front matter). Its root
variables hold the run settings below; a recipe that does not set one gets the
default, and `--set KEY=VALUE` overrides either. The modifiers are SparseML's own plus
sparsebias's pruning methods (sparsebias.pruning), so a recipe written for SparseML and
torchvision models works as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import SparsebiasError
from . import pruning
from .models import prunable_weights
from .sparseml_patch import (NM_TOLERANCE, ScheduledModifierManager, UnknownVariableException,
                             evaluate_recipe_yaml_str_equations, load_recipe_yaml_str)

RUN_DEFAULTS = {
    "arch": "resnet18",
    "data": "synthfaces",
    "image_size": 64,
    "batch_size": 64,
    "optimizer": "sgd",   # sgd (with momentum) or adam
    "init_lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "num_epochs": None,   # when the recipe has no EpochRangeModifier
    "precision": "auto",  # auto (bf16 where the CPU has it natively), fp32 or bf16
}
OPTIMIZERS = ("sgd", "adam")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class Recipe:
    path: Path
    text: str                # the file as written; stored in the bundle
    variables: dict          # root variables after overrides
    manager: ScheduledModifierManager
    settings: dict  # run settings: RUN_DEFAULTS, then the recipe's variables, then overrides

    @property
    def epochs(self) -> int:
        epochs = self.manager.max_epochs if self.manager.max_epochs > 0 else self.settings["num_epochs"]
        if not epochs:
            raise SparsebiasError(f"{self.path}: sets no number of epochs; add an EpochRangeModifier or num_epochs")
        return int(round(epochs))

    @property
    def pruning_modifiers(self) -> list:
        return [m for m in self.manager.iter_modifiers() if hasattr(m, "final_sparsity")]

    @property
    def pruning_end_epoch(self) -> float:
        """The epoch after which every pruning modifier holds its final sparsity."""
        return max([max(m.end_epoch, m.start_epoch, 0) for m in self.pruning_modifiers], default=0.0)


class _RecipeLoader(yaml.SafeLoader):
    """A safe loader that accepts any !Tag, to check syntax and names with real line numbers."""


def _tagged(loader, tag_suffix, node):
    value = loader.construct_mapping(node, deep=True) if isinstance(node, yaml.MappingNode) else {}
    return {"__modifier__": tag_suffix, "__line__": node.start_mark.line + 1, **value}


_RecipeLoader.add_multi_constructor("!", _tagged)


def _yaml_text(path: Path, text: str) -> tuple[str, int]:
    """The YAML part of a recipe and the line it starts on (Markdown: the front matter)."""
    if path.suffix.lower() == ".md":
        match = re.match(r"\s*---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
        if not match:
            raise SparsebiasError(f"{path}: a Markdown recipe needs YAML front matter between '---' lines")
        return match.group(1), text[:match.start(1)].count("\n")
    return text, 0


def known_modifiers() -> set[str]:
    return {tag.split(".")[-1].lstrip("!") for tag in yaml.SafeLoader.yaml_constructors if tag and tag.startswith("!")}


def parse_overrides(items) -> dict:
    """['num_epochs=3', 'arch=mobilenet_v2'] -> {'num_epochs': 3, 'arch': 'mobilenet_v2'}."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SparsebiasError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


def load_recipe(path, overrides: dict | None = None) -> Recipe:
    """Read, check and instantiate a recipe; every problem becomes one SparsebiasError line."""
    path = Path(path)
    if not path.is_file():
        raise SparsebiasError(f"recipe not found: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SparsebiasError(f"cannot read recipe {path}: {e}") from None
    body, offset = _yaml_text(path, text)
    try:
        doc = yaml.load(body, Loader=_RecipeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1 + offset}" if mark else str(path)
        raise SparsebiasError(f"{where}: YAML error: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(doc, dict):
        raise SparsebiasError(f"{path}: a recipe is a YAML mapping of variables and modifier lists")

    known = known_modifiers()
    for entry in _modifier_entries(doc):
        if entry["__modifier__"].split(".")[-1] not in known:
            raise SparsebiasError(
                f"{path}:{entry['__line__'] + offset}: unknown modifier !{entry['__modifier__']}")

    overrides = dict(overrides or {})
    declared = {k for k, v in doc.items() if not _is_modifier_list(v)}
    unknown = sorted(set(overrides) - declared - set(RUN_DEFAULTS))
    if unknown:
        raise SparsebiasError(
            f"{path}: cannot set {unknown[0]!r}: not a variable of this recipe nor a run setting "
            f"(recipe variables: {', '.join(sorted(declared)) or 'none'}; run settings: {', '.join(RUN_DEFAULTS)})")
    recipe_vars = {k: v for k, v in overrides.items() if k in declared}
    try:
        evaluated = yaml.load(evaluate_recipe_yaml_str_equations(load_recipe_yaml_str(body, **recipe_vars)),
                              Loader=_RecipeLoader)
        manager = ScheduledModifierManager.from_yaml(body, recipe_variables=recipe_vars)
    except (TypeError, ValueError, KeyError, NameError, SyntaxError, AttributeError, UnknownVariableException) as e:
        raise SparsebiasError(f"{path}: invalid recipe: {_first_line(e)}") from None
    variables = {k: v for k, v in evaluated.items() if k in declared}
    settings = {**RUN_DEFAULTS, **{k: v for k, v in {**variables, **overrides}.items() if k in RUN_DEFAULTS}}
    _check_settings(path, settings)
    recipe = Recipe(path, text, {**variables, **overrides}, manager, settings)
    _check_schedules(recipe)
    return recipe


def _is_modifier_list(value) -> bool:
    return isinstance(value, list) and any(isinstance(v, dict) and "__modifier__" in v for v in value)


def _modifier_entries(doc: dict):
    for value in doc.values():
        if _is_modifier_list(value):
            yield from (v for v in value if isinstance(v, dict) and "__modifier__" in v)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _check_settings(path: Path, s: dict) -> None:
    """Validate run settings in place; integral floats (SparseML writes 64.0) become ints."""
    if str(s["optimizer"]).lower() not in OPTIMIZERS:
        raise SparsebiasError(f"{path}: optimizer {s['optimizer']!r} is not one of {', '.join(OPTIMIZERS)}")
    if s["precision"] not in PRECISIONS:
        raise SparsebiasError(f"{path}: precision {s['precision']!r} is not one of {', '.join(PRECISIONS)}")
    for key in ("image_size", "batch_size"):
        if isinstance(s[key], float) and s[key].is_integer():
            s[key] = int(s[key])
        if not isinstance(s[key], int) or s[key] < 1:
            raise SparsebiasError(f"{path}: {key} must be a positive integer, got {s[key]!r}")
    for key in ("init_lr", "momentum", "weight_decay"):
        if not isinstance(s[key], (int, float)) or s[key] < 0:
            raise SparsebiasError(f"{path}: {key} must be a non-negative number, got {s[key]!r}")


def _nm_ratio(modifier) -> tuple[int, int] | None:
    mask_type = getattr(modifier, "mask_type", "unstructured")
    if isinstance(mask_type, str) and re.fullmatch(r"\d+:\d+", mask_type):
        n, m = map(int, mask_type.split(":"))
        return n, m
    if mask_type == "tensorrt":
        return 2, 4
    return None


def _check_schedules(recipe: Recipe) -> None:
    for mod in recipe.pruning_modifiers:
        init = getattr(mod, "init_sparsity", None)
        if init is not None and init != mod.final_sparsity and 0 <= mod.end_epoch <= mod.start_epoch:
            raise SparsebiasError(
                f"{recipe.path}: {type(mod).__name__} raises sparsity from {init} to {mod.final_sparsity} "
                f"but ends (epoch {mod.end_epoch:g}) no later than it starts (epoch {mod.start_epoch:g})")
        for target in (init, mod.final_sparsity):
            if isinstance(target, (int, float)) and not 0 <= target < 1:
                raise SparsebiasError(f"{recipe.path}: {type(mod).__name__} sparsity {target} is not in [0, 1)")
        if recipe.epochs < mod.end_epoch:
            raise SparsebiasError(
                f"{recipe.path}: {type(mod).__name__} ends at epoch {mod.end_epoch:g}, after training ends "
                f"(epoch {recipe.epochs})")
        _check_nm_target(recipe, mod)


def _check_nm_target(recipe: Recipe, mod) -> None:
    ratio = _nm_ratio(mod)
    if ratio is None:
        return
    n, m = ratio
    for target in (getattr(mod, "init_sparsity", None), mod.final_sparsity):
        if target and abs(target - (1 - n / m)) > NM_TOLERANCE:
            raise SparsebiasError(
                f"{recipe.path}: {type(mod).__name__} with mask_type {n}:{m} needs sparsity "
                f"{1 - n / m:g} (1 - N/M), got {target}")


def check_recipe_against_model(recipe: Recipe, model, arch: str) -> None:
    """Every params pattern must name a layer of the model; N:M layers must split into groups."""
    shapes = dict(model.named_parameters())
    names, prunable = list(shapes), set(prunable_weights(model))
    for mod in recipe.manager.iter_modifiers():
        params = getattr(mod, "params", None)
        if params is None:
            continue
        patterns = [params] if isinstance(params, str) else list(params)
        for pattern in patterns:
            matched = _match(pattern, names, prunable)
            if not matched:
                raise SparsebiasError(
                    f"{recipe.path}: {type(mod).__name__} params pattern {pattern!r} matches no layer of {arch}")
            for name in matched if hasattr(mod, "final_sparsity") else ():
                _check_reachable(recipe, mod, name, shapes[name])
            ratio = _nm_ratio(mod) if hasattr(mod, "final_sparsity") else None
            for name in matched if ratio else ():
                w = shapes[name]
                if w.dim() in (2, 4) and w.shape[1] % ratio[1]:
                    raise SparsebiasError(
                        f"{recipe.path}: {type(mod).__name__} ({ratio[0]}:{ratio[1]}) params pattern {pattern!r} "
                        f"includes {name} with {w.shape[1]} input channels, not a multiple of {ratio[1]}")


def check_recipe_against_data(recipe: Recipe, table) -> None:
    """Sensitive columns a modifier names must be labels of the data with two or more values in training."""
    train = table.split("train")
    for mod in recipe.manager.iter_modifiers():
        for column in getattr(mod, "sensitive", None) or ():
            if column not in table.names:
                raise SparsebiasError(f"{recipe.path}: {type(mod).__name__} sensitive column {column!r} is not a "
                                      f"label of {table.root} (labels: {', '.join(table.names)})")
            if len(set(table.labels[train, table.names.index(column)].tolist())) < 2:
                raise SparsebiasError(f"{recipe.path}: {type(mod).__name__} sensitive column {column!r} has a single "
                                      f"value in the training split of {table.root}; groups need two or more")


def _check_reachable(recipe: Recipe, mod, name: str, weight) -> None:
    """A layer-wise pruner must leave every layer at least one weight."""
    if not isinstance(mod, pruning.ScoredPruningModifier) or mod.global_sparsity:
        return
    n = weight.numel()
    if n - round(n * mod.final_sparsity) < 1:
        raise SparsebiasError(
            f"{recipe.path}: {type(mod).__name__} cannot reach sparsity {mod.final_sparsity} layer by layer: "
            f"{name} has {n} weights and would keep none")


def _match(pattern: str, names: list[str], prunable: set[str]) -> list[str]:
    if pattern in ("__ALL__",):
        return names
    if pattern == "__ALL_PRUNABLE__":
        return [n for n in names if n in prunable]
    if pattern.startswith("re:"):
        regex = re.compile(pattern[3:])
        return [n for n in names if regex.match(n)]
    return [n for n in names if n == pattern]
