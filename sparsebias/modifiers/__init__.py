"""The recipe executor's modifier life cycle, and the modifiers that schedule training.

A modifier is active from `start_epoch` to `end_epoch` and acts on the optimizer or the
model when the recipe manager (sparsebias.recipes) says so. The pruning modifiers
(sparsebias.pruning) build on `UpdateModifier`; `QuantizationModifier` trains with the
INT8 graph's rounding (quantization-aware training).
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
from .quantization import QuantizationModifier

TRAINING_MODIFIERS = (EpochRangeModifier, SetLearningRateModifier, LearningRateFunctionModifier, LearningRateModifier,
                      SetWeightDecayModifier, QuantizationModifier)

__all__ = ["EpochRangeModifier", "LearningRateFunctionModifier", "LearningRateModifier", "Modifier",
           "QuantizationModifier", "RecipeError",
           "SetLearningRateModifier", "SetWeightDecayModifier", "TRAINING_MODIFIERS", "UpdateModifier"]
