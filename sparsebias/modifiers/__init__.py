"""The recipe executor's modifier life cycle, and the modifiers that schedule training.

A modifier is active from `start_epoch` to `end_epoch` and acts on the optimizer or the
model when the recipe manager (sparsebias.recipes) says so. The pruning modifiers
(sparsebias.pruning) build on `UpdateModifier`.
"""

from .base import (
                   EpochRangeModifier,
                   LearningRateFunctionModifier,
                   LearningRateModifier,
                   Modifier,
                   RecipeError,
                   SetLearningRateModifier,
                   SetWeightDecayModifier,
                   UpdateModifier,
)

TRAINING_MODIFIERS = (EpochRangeModifier, SetLearningRateModifier, LearningRateFunctionModifier, LearningRateModifier,
                      SetWeightDecayModifier)

__all__ = ["EpochRangeModifier", "LearningRateFunctionModifier", "LearningRateModifier", "Modifier", "RecipeError",
           "SetLearningRateModifier", "SetWeightDecayModifier", "TRAINING_MODIFIERS", "UpdateModifier"]
