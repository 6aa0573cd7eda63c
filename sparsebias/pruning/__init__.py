"""sparsebias's own pruning methods, as modifiers of its recipe executor.

Importing this package registers them with the executor (sparsebias.recipes loads it
when it reads a recipe), so a recipe names them like any built-in modifier:

    !SNIPPruningModifier, !GraSPPruningModifier, !LotteryPruningModifier,
    !WSPruningModifier, !FairGRAPEPruningModifier

Each is a gradual pruner (init_sparsity, final_sparsity, start_epoch, end_epoch,
update_frequency, params); they differ in how they score weights and choose the ones
to keep. The data-driven ones sample training batches through the `score_data` that
`sparsebias compress` hands to the recipe manager.
"""

from .base import ScoredPruningModifier, keep_top
from .fairgrape import FairGRAPEPruningModifier, fair_keep
from .methods import GraSPPruningModifier, LotteryPruningModifier, SNIPPruningModifier, WSPruningModifier
from .score_data import ScoreData

__all__ = ["FairGRAPEPruningModifier", "GraSPPruningModifier", "LotteryPruningModifier", "SNIPPruningModifier",
           "ScoreData", "ScoredPruningModifier", "WSPruningModifier", "fair_keep", "keep_top"]
