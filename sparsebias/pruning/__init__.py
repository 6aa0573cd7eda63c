"""Pruning, as modifiers of sparsebias's recipe executor: SparseML's magnitude pruners and
sparsebias's own methods.

SparseML's: !GMPruningModifier, !MagnitudePruningModifier, !GlobalMagnitudePruningModifier,
!ConstantPruningModifier (unstructured, N:M, block, channel and filter masks). Ours:
!SNIPPruningModifier, !GraSPPruningModifier, !LotteryPruningModifier, !WSPruningModifier,
!FairGRAPEPruningModifier. Each of ours is a gradual pruner (init_sparsity,
final_sparsity, start_epoch, end_epoch, update_frequency, params); they differ in how
they score weights and choose the ones to keep. The data-driven ones sample training
batches through the `score_data` that `sparsebias compress` hands to the recipe manager.
The mask arithmetic is also a functional face: `keep_top`, `nm_masks`, `fair_keep`.
"""

from .fairgrape import FairGRAPEPruningModifier, fair_keep
from .magnitude import (
                        ConstantPruningModifier,
                        GlobalMagnitudePruningModifier,
                        GMPruningModifier,
                        GradualPruningModifier,
                        MagnitudePruningModifier,
                        PruningModifier,
                        interpolate,
                        nm_masks,
)
from .methods import GraSPPruningModifier, LotteryPruningModifier, SNIPPruningModifier, WSPruningModifier
from .score_data import ScoreData
from .scored import ScoredPruningModifier, keep_top

PRUNING_MODIFIERS = (GMPruningModifier, MagnitudePruningModifier, GlobalMagnitudePruningModifier,
                     ConstantPruningModifier, SNIPPruningModifier, GraSPPruningModifier, LotteryPruningModifier,
                     WSPruningModifier, FairGRAPEPruningModifier)

__all__ = ["ConstantPruningModifier", "FairGRAPEPruningModifier", "GMPruningModifier",
           "GlobalMagnitudePruningModifier", "GradualPruningModifier", "GraSPPruningModifier",
           "LotteryPruningModifier", "MagnitudePruningModifier", "PRUNING_MODIFIERS", "PruningModifier",
           "SNIPPruningModifier", "ScoreData", "ScoredPruningModifier", "WSPruningModifier", "fair_keep",
           "interpolate", "keep_top", "nm_masks"]
