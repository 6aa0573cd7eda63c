"""SparseML recipes, read and run by sparsebias's own executor (no sparseml import).

`load_recipe(path, overrides)` reads a recipe (YAML, or a Markdown recipe card) as
SparseML 1.8 reads it and instantiates its modifiers; `recipe.manager` runs them over
training. `MODIFIERS` lists what the executor supports.
"""

from .manager import RecipeManager, RecipeStep
from .modifiers import MODIFIERS, Modifier, RecipeError, UpdateModifier, register
from .pruning import (ConstantPruningModifier, GlobalMagnitudePruningModifier, GMPruningModifier,
                      GradualPruningModifier, MagnitudePruningModifier, PruningModifier, interpolate, nm_masks)
from .recipe import (OPTIMIZERS, PRECISIONS, RUN_DEFAULTS, Recipe, check_recipe_against_data,
                     check_recipe_against_model, load_recipe, parse_overrides)

__all__ = ["MODIFIERS", "OPTIMIZERS", "PRECISIONS", "RUN_DEFAULTS", "ConstantPruningModifier",
           "GMPruningModifier", "GlobalMagnitudePruningModifier", "GradualPruningModifier",
           "MagnitudePruningModifier", "Modifier", "PruningModifier", "Recipe", "RecipeError", "RecipeManager",
           "RecipeStep", "UpdateModifier", "check_recipe_against_data", "check_recipe_against_model",
           "interpolate", "load_recipe", "nm_masks", "parse_overrides", "register"]
