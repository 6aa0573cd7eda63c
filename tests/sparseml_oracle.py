"""sparseml 1.8 as an oracle for sparsebias's recipe executor (only where it is installed).

Imported by the equivalence tests alone. sparseml 1.8.0's NMPruningMaskCreator returns
Conv2d masks in its permuted (O, kh, kw, I) layout, so the first mask update fails; we
patch it to return the weight's layout (the fix sparsebias's own N:M masks make).
"""

import warnings

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

import torch  # noqa: E402
from sparseml.pytorch.optim import ScheduledModifierManager  # noqa: E402
from sparseml.pytorch.sparsification.pruning.mask_creator import NMPruningMaskCreator  # noqa: E402
from sparseml.pytorch.utils.logger import BaseLogger, LoggerManager  # noqa: E402

from sparsebias.pruning import nm_masks  # noqa: E402

NM_TOLERANCE = 1e-2


def _create_sparsity_masks(self, tensors, target, global_sparsity=False):
    targets = target if isinstance(target, list) else [target] * len(tensors)
    masks = []
    for tensor, t in zip(tensors, targets):
        if t == 0.0:
            masks.append(torch.ones_like(tensor))
        elif abs(t - (1 - self._N / self._M)) > NM_TOLERANCE:
            raise ValueError(f"sparsity {t} does not match the {self._N}:{self._M} ratio")
        else:
            masks.append(nm_masks(tensor, self._N, self._M))
    return masks


NMPruningMaskCreator.create_sparsity_masks = _create_sparsity_masks


def quiet_loggers() -> LoggerManager:
    """Loggers that write nothing: sparseml otherwise writes sparse_logs/ into the cwd."""
    return LoggerManager([BaseLogger("oracle")], log_python=False)


def manager_from(text: str, variables: dict | None = None) -> ScheduledModifierManager:
    return ScheduledModifierManager.from_yaml(text, recipe_variables=variables or None)
