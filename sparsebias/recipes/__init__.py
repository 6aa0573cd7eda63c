"""SparseML recipes, read and run by sparsebias's own executor (no sparseml import).

`load_recipe(path, overrides)` reads a recipe (YAML, or a Markdown recipe card) as
SparseML 1.8 reads it and instantiates its modifiers; `recipe.manager` runs them over
training. `MODIFIERS` lists what the executor supports.
"""

from .manager import RecipeManager, RecipeStep
from .recipe import (
                     MODIFIERS,
                     OPTIMIZERS,
                     RUN_DEFAULTS,
                     Recipe,
                     check_recipe_against_data,
                     check_recipe_against_model,
                     load_recipe,
                     parse_overrides,
)

__all__ = ["MODIFIERS", "OPTIMIZERS", "RUN_DEFAULTS", "Recipe", "RecipeManager", "RecipeStep",
           "check_recipe_against_data", "check_recipe_against_model", "load_recipe", "parse_overrides"]
