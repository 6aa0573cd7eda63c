"""Load and check recipes, and read sparsebias's run settings out of them.

A recipe is a SparseML YAML recipe (or a Markdown recipe card). Its root variables hold
the run settings below; a recipe that does not set one gets the default, and `--set
KEY=VALUE` overrides either (and every YAML alias of it). Its modifiers are SparseML's,
run by sparsebias's executor, plus sparsebias's pruning methods (sparsebias.pruning).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from torch import nn

from ..core.devices import PRECISIONS
from ..core.errors import SparsebiasError, check_file, first_line
from ..modifiers import TRAINING_MODIFIERS, QuantizationModifier, RecipeError
from ..modifiers.quantization import quantization_aware
from ..pruning import PRUNING_MODIFIERS, GradualPruningModifier, PruningModifier
from ..pruning.naming import sparseml_namer
from .manager import RecipeManager
from .reader import load_value, read_recipe

# SparseML modifiers the executor does not run, and what a user should know about each.
UNSUPPORTED = {
    "MFACPruningModifier": "M-FAC pruning",
    "OBSPruningModifier": "oBERT/OBS pruning", "DistillationModifier": "distillation",
    "KnowledgeDistillationModifier": "distillation", "ACDCPruningModifier": "AC/DC pruning",
    "MovementPruningModifier": "movement pruning", "TopKASTPruningModifier": "Top-KAST pruning",
    "RigLPruningModifier": "RigL", "LayerPruningModifier": "layer pruning",
    "StructuredPruningModifier": "structured (filter/channel) pruning", "LayerThinningModifier": "layer thinning",
    "PowerpropagationModifier": "powerpropagation", "SetParamModifier": "parameter setting",
    "GradualParamModifier": "parameter schedules", "TrainableParamsModifier": "freezing parameters",
    "AlternatingMaskModifier": "alternating masks", "PerLayerDistillationModifier": "distillation",
    "ASRegModifier": "activation sparsity regularisation",
    "SparsificationLoggingModifier": "logging to SparseML's loggers",
}

# module types the INT8 graph keeps in float or folds away, so a QAT recipe may exclude them
LEFT_IN_FLOAT = {"Linear", "BatchNorm2d", "Dropout", "Identity", "Softmax"}

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
    "precision": "auto",  # auto (bf16 where the device has it natively), fp32, bf16 or fp16
    "small_maps": "product",  # CPU convolutions on maps of <= 16 positions: product (training.small_maps) or torch
}
SMALL_MAPS = ("product", "torch")
OPTIMIZERS = ("sgd", "adam")
# every modifier a recipe may name, by its YAML tag
MODIFIERS: dict[str, type] = {cls.__name__: cls for cls in TRAINING_MODIFIERS + PRUNING_MODIFIERS}


@dataclass
class Recipe:
    path: Path
    text: str                # the file as written; stored in the bundle
    variables: dict          # root variables after overrides
    manager: RecipeManager
    settings: dict  # run settings: RUN_DEFAULTS, then the recipe's variables, then overrides

    @property
    def epochs(self) -> int:
        epochs = self.manager.max_epochs if self.manager.max_epochs > 0 else self.settings["num_epochs"]
        if not epochs:
            raise SparsebiasError(f"{self.path}: sets no number of epochs; add an EpochRangeModifier or num_epochs")
        return int(round(epochs))

    @property
    def pruning_modifiers(self) -> list:
        return [m for m in self.manager.iter_modifiers() if isinstance(m, GradualPruningModifier)]

    @property
    def quantization_modifier(self):
        """The recipe's QuantizationModifier (quantization-aware training), or None."""
        found = [m for m in self.manager.iter_modifiers() if isinstance(m, QuantizationModifier)]
        return found[0] if found else None

    @property
    def pruning_end_epoch(self) -> float:
        """The epoch after which every pruning modifier holds its final sparsity."""
        return max([max(m.end_epoch, m.start_epoch, 0) for m in self.pruning_modifiers], default=0.0)


def parse_overrides(items) -> dict:
    """['num_epochs=3', 'mask_type=2:4'] -> {'num_epochs': 3, 'mask_type': '2:4'}, read as a recipe reads them."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SparsebiasError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = load_value(value) if value.strip() else None
        except yaml.YAMLError:   # not YAML: the text as it is
            out[key.strip()] = value
    return out


def load_recipe(path, overrides: dict | None = None) -> Recipe:
    """Read, check and instantiate a recipe; every problem becomes one SparsebiasError line."""
    path = check_file(path, "recipe")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SparsebiasError(f"cannot read recipe {path}: {e}") from None
    overrides = dict(overrides or {})
    document = read_recipe(path, text, overrides)   # applies the overrides that name its variables
    unknown = sorted(set(overrides) - document.declared - set(RUN_DEFAULTS))
    if unknown:
        raise SparsebiasError(
            f"{path}: cannot set {unknown[0]!r}: not a variable of this recipe nor a run setting "
            f"(recipe variables: {', '.join(sorted(document.declared)) or 'none'}; "
            f"run settings: {', '.join(RUN_DEFAULTS)})")
    for entry in document.modifiers:   # every name first: an unknown modifier is the bigger problem
        _modifier_class(path, entry)
    modifiers = [_instantiate(path, entry) for entry in document.modifiers]
    variables = {**document.variables, **overrides}
    settings = {**RUN_DEFAULTS, **{k: v for k, v in variables.items() if k in RUN_DEFAULTS}}
    _check_settings(path, settings)
    recipe = Recipe(path, text, variables, RecipeManager(modifiers, [e.stage for e in document.modifiers]), settings)
    _check_schedules(recipe)
    return recipe


def _modifier_class(path: Path, entry) -> type:
    known = MODIFIERS
    where = f"{path}:{entry.line}"
    if entry.name not in known:
        what = UNSUPPORTED.get(entry.name)
        supported = ", ".join(sorted(known))
        if what:
            raise SparsebiasError(f"{where}: !{entry.name} ({what}) is not supported by sparsebias's recipe "
                                  f"executor; supported: {supported}")
        raise SparsebiasError(f"{where}: unknown modifier !{entry.name}; supported: {supported}")
    return known[entry.name]


def _instantiate(path: Path, entry):
    where, cls = f"{path}:{entry.line}", _modifier_class(path, entry)
    args = {k: v for k, v in entry.args.items() if k != "log_types"}
    accepted = inspect.signature(cls.__init__).parameters
    extra = [k for k in args if k not in accepted]
    if extra:
        raise SparsebiasError(f"{where}: {entry.name} has no argument {extra[0]!r} "
                              f"(its arguments: {', '.join(p for p in accepted if p != 'self')})")
    missing = [k for k, p in accepted.items() if k != "self" and p.default is inspect.Parameter.empty and k not in args]
    if missing:
        raise SparsebiasError(f"{where}: {entry.name} needs {missing[0]!r}")
    try:
        return cls(**args)
    except RecipeError as e:
        raise SparsebiasError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:
        raise SparsebiasError(f"{where}: {entry.name}: invalid arguments: {first_line(e)}") from None


def _check_settings(path: Path, s: dict) -> None:
    """Validate run settings in place; integral floats (SparseML writes 64.0) become ints."""
    if str(s["optimizer"]).lower() not in OPTIMIZERS:
        raise SparsebiasError(f"{path}: optimizer {s['optimizer']!r} is not one of {', '.join(OPTIMIZERS)}")
    if s["precision"] not in PRECISIONS:
        raise SparsebiasError(f"{path}: precision {s['precision']!r} is not one of {', '.join(PRECISIONS)}")
    if s["small_maps"] not in SMALL_MAPS:
        raise SparsebiasError(f"{path}: small_maps {s['small_maps']!r} is not one of {', '.join(SMALL_MAPS)}")
    for key in ("image_size", "batch_size"):
        if isinstance(s[key], float) and s[key].is_integer():
            s[key] = int(s[key])
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 1:
            raise SparsebiasError(f"{path}: {key} must be a positive integer, got {s[key]!r}")
    for key in ("init_lr", "momentum", "weight_decay"):
        value = s[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise SparsebiasError(f"{path}: {key} must be a finite non-negative number, got {value!r}")


def _check_schedules(recipe: Recipe) -> None:
    quantizing = [m for m in recipe.manager.iter_modifiers() if isinstance(m, QuantizationModifier)]
    if len(quantizing) > 1:
        raise SparsebiasError(f"{recipe.path}: {len(quantizing)} QuantizationModifiers; one quantizes the model")
    if quantizing and quantizing[0].start_epoch >= recipe.epochs:
        raise SparsebiasError(f"{recipe.path}: QuantizationModifier starts at epoch {quantizing[0].start_epoch:g}, "
                              f"when training has ended (epoch {recipe.epochs})")
    for mod in recipe.pruning_modifiers:
        if recipe.epochs < mod.end_epoch:
            raise SparsebiasError(f"{recipe.path}: {type(mod).__name__} ends at epoch {mod.end_epoch:g}, after training ends "
                                  f"(epoch {recipe.epochs})")


def check_recipe_against_model(recipe: Recipe, model, arch: str) -> None:
    """Every params pattern must name a parameter of the model; N:M layers must split into groups;
    a layer-wise pruner must leave each layer a weight; quantization must cover every convolution
    of a model torch.fx can trace."""
    _check_quantization(recipe, model, arch)
    for mod in recipe.manager.iter_modifiers():
        if not isinstance(mod, PruningModifier):
            continue
        try:
            found = mod.targets(model)
        except RecipeError as e:
            raise SparsebiasError(f"{recipe.path}: {str(e).replace('the model', arch, 1)}") from None
        if not isinstance(mod, GradualPruningModifier):
            continue
        for (name, layer, attr), final in zip(found, mod.final_sparsities):
            weight = getattr(layer, attr)
            nm = mod.mask_type.nm
            if nm and (weight.dim() not in (2, 4) or weight.shape[1] % nm[1]):
                raise SparsebiasError(
                    f"{recipe.path}: {type(mod).__name__} ({mod.mask_type}) includes {name} with "
                    f"{weight.shape[1] if weight.dim() > 1 else weight.numel()} input channels, "
                    f"not a multiple of {nm[1]}")
            if not mod.global_sparsity and not nm and weight.numel() - round(weight.numel() * final) < 1:
                raise SparsebiasError(
                    f"{recipe.path}: {type(mod).__name__} cannot reach sparsity {final} layer by layer: "
                    f"{name} has {weight.numel()} weights and would keep none")


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


def _check_quantization(recipe: Recipe, model, arch: str) -> None:
    """A QuantizationModifier's `submodules` (the model's names, or SparseML's ResNet and MobileNetV1
    names such as `input` and `sections`) must name modules of the model and cover every
    convolution: the INT8 graph quantizes them all. Its `exclude_module_types` may name types
    the model lacks (BERT's LayerNorm, YOLO's SiLU) or that the graph leaves in float anyway;
    excluding any other (Conv2d, or ReLU, whose outputs the graph quantizes) would change
    what SparseML trains, so it is refused."""
    qat = recipe.quantization_modifier
    if qat is None:
        return
    try:
        quantization_aware(model)
    except RecipeError as e:
        raise SparsebiasError(f"{recipe.path}: {e}") from None
    present = {type(m).__name__ for m in model.modules()}
    excluded = sorted(present & set(qat.exclude_module_types) - LEFT_IN_FLOAT)
    if excluded:
        raise SparsebiasError(f"{recipe.path}: QuantizationModifier exclude_module_types {excluded[0]!r}: {arch} has "
                              f"such modules and sparsebias's INT8 graph quantizes around them; only types the model "
                              f"lacks, or {', '.join(sorted(LEFT_IN_FLOAT))}, can be excluded")
    if qat.submodules is None:
        return
    names, namer = {}, sparseml_namer(model)   # every module name, and its SparseML alias
    for name, _ in model.named_modules():
        names[name] = [name]
        alias = namer(f"{name}.weight") if namer and name else None
        if alias:
            names[name].append(alias.removesuffix(".weight"))

    def under(name, prefix):
        return prefix == "" or name == prefix or name.startswith(prefix + ".")
    unknown = [s for s in qat.submodules if not any(under(n, s) for aliases in names.values() for n in aliases)]
    if unknown:
        raise SparsebiasError(f"{recipe.path}: QuantizationModifier submodules {unknown[0]!r} names no module of {arch}")
    left = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)
            and not any(under(n, s) for n in names[name] for s in qat.submodules)]
    if left:
        raise SparsebiasError(f"{recipe.path}: QuantizationModifier submodules leave {len(left)} convolution(s) in "
                              f"float (e.g. {left[0]}); sparsebias's INT8 graph quantizes every convolution")
