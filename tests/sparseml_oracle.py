"""Import sparseml the way sparsebias needs it, with its N:M convolution bug corrected.

sparseml 1.8.0's NMPruningMaskCreator groups a Conv2d weight (O, I, kh, kw) by
permuting it to (O, kh, kw, I), so that each group is M consecutive input channels,
but returns the mask still in that permuted layout; the first mask update then fails
with "mask shape ... does not match layer.param shape". We replace its mask creation
with one that permutes back. Everything else stays sparseml's.
"""

import warnings

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

import torch  # noqa: E402
import sparseml.pytorch.sparsification  # noqa: E402,F401  (registers every modifier with YAML)
from sparseml.optim.helpers import evaluate_recipe_yaml_str_equations, load_recipe_yaml_str  # noqa: E402,F401
from sparseml.pytorch.optim import ScheduledModifierManager  # noqa: E402,F401
from sparseml.pytorch.sparsification.pruning.mask_creator import NMPruningMaskCreator  # noqa: E402
from sparseml.pytorch.utils.logger import BaseLogger, LoggerManager  # noqa: E402
from sparseml.utils.restricted_eval import UnknownVariableException  # noqa: E402,F401

NM_TOLERANCE = 1e-2  # sparseml's own: the target must be within this of 1 - N/M


def nm_masks(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the n largest-magnitude weights in every group of m consecutive inputs.

    Linear (out, in): groups run along `in`. Conv2d (out, in, kh, kw): groups run along
    `in` at each (out, kh, kw) position, which is what sparse tensor cores expect.
    """
    if weight.dim() == 4:
        per_position = weight.permute(0, 2, 3, 1)  # (out, kh, kw, in)
        mask = nm_masks(per_position.reshape(-1, weight.shape[1]), n, m)
        return mask.reshape(per_position.shape).permute(0, 3, 1, 2).contiguous()
    if weight.shape[-1] % m:
        raise ValueError(f"{weight.shape[-1]} input channels cannot be split into groups of {m}")
    groups = weight.detach().abs().reshape(-1, m)
    drop = torch.argsort(groups, dim=1)[:, : m - n]
    return torch.ones_like(groups).scatter_(1, drop, 0.0).reshape(weight.shape)


def _create_sparsity_masks(self, tensors, target, global_sparsity=False):
    targets = target if isinstance(target, list) else [target] * len(tensors)
    nm_sparsity = 1 - self._N / self._M
    masks = []
    for tensor, t in zip(tensors, targets):
        if t == 0.0:
            masks.append(torch.ones_like(tensor))
        elif abs(t - nm_sparsity) > NM_TOLERANCE:
            raise ValueError(f"sparsity {t} does not match the {self._N}:{self._M} ratio ({nm_sparsity:g})")
        elif tensor.dim() not in (2, 4):
            raise NotImplementedError("N:M masks support Linear and Conv2d weights only")
        else:
            masks.append(nm_masks(tensor, self._N, self._M))
    return masks


NMPruningMaskCreator.create_sparsity_masks = _create_sparsity_masks


def quiet_loggers() -> LoggerManager:
    """Loggers for a manager that write nothing: sparseml otherwise writes sparse_logs/ into the cwd."""
    return LoggerManager([BaseLogger("sparsebias")], log_python=False)
