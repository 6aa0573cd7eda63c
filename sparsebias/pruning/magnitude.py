"""Pruning modifiers with SparseML 1.8's semantics, and the masks they make.

A pruning modifier owns one mask per parameter it prunes. From its start epoch the
masks are enforced: gradients are multiplied by them (in place, before each optimizer
step), and at each mask change the pruned weights and their optimizer state (momentum,
Adam's moments) are zeroed, after which SGD and Adam steps leave them at zero. (SparseML
also multiplies the weights by the masks before every forward pass and after every step:
on weights already masked that changes no bit, and it cost a tenth of a pruned training
step; bench/masking.py.) At
each mask update a gradual pruner raises its target sparsity along `inter_func` from
`init_sparsity` (at start_epoch) to `final_sparsity` (at end_epoch), scores the weights
(by magnitude here; sparsebias.pruning's methods score otherwise) and keeps the best.
Pruned weights never come back.

Masks as SparseML makes them, so that the same recipe and seed give the same masks:
- unstructured: the round(n * s) lowest scores go; ties at the threshold are settled in
  index order, and when the threshold is the minimum score, among the minimal entries
  shuffled with random.Random(42); `global_sparsity` ranks all parameters together;
- N:M ("2:4" or 2:4, "tensorrt" = 2:4): in every group of M consecutive input channels
  (of a Conv2d: at each output channel and kernel position) the N largest stay;
- block4 and [rows, cols] blocks: scores averaged over each block, then as unstructured.
"""

from __future__ import annotations

import math
import random
import re
import sys

import torch
from torch import nn

from ..modifiers.base import RecipeError, UpdateModifier
from .naming import find_parameters

INTER_FUNCS = ("linear", "cubic", "inverse_cubic")
NM_TOLERANCE = 1e-2   # SparseML's: an N:M target must be within this of 1 - N/M


def interpolate(x: float, x0: float, x1: float, y0: float, y1: float, inter_func: str) -> float:
    """y0 at x0 to y1 at x1 along `inter_func`; y1 from x1 on (and at once when x1 <= x0)."""
    if x1 <= x0:
        return y1
    t = min(max((x - x0) / (x1 - x0), 0.0), 1.0)
    shape = {"linear": t, "cubic": 1 - (1 - t) ** 3, "inverse_cubic": 1 - (1 - t) ** (1 / 3)}[inter_func]
    if shape <= sys.float_info.epsilon:
        return y0
    if shape >= 1.0 - sys.float_info.epsilon:
        return y1
    return shape * (y1 - y0) + y0


def unstructured_masks(scores: list[torch.Tensor], targets: list[float], global_sparsity: bool) -> list[torch.Tensor]:
    """Masks dropping the lowest round(n * target) scores of each tensor (of all, if global)."""
    if global_sparsity:
        if len(set(targets)) > 1:
            raise RecipeError(f"global pruning needs one sparsity for every parameter, got {sorted(set(targets))}")
        flat = torch.cat([s.detach().reshape(-1) for s in scores])
        mask = _lowest_out(flat, targets[0])
        return [m.view_as(s) for m, s in zip(torch.split(mask, [s.numel() for s in scores]), scores)]
    return [_lowest_out(s.detach().reshape(-1), t).view_as(s) for s, t in zip(scores, targets)]


def _lowest_out(flat: torch.Tensor, sparsity: float) -> torch.Tensor:
    n = flat.numel()
    if n < 1 or sparsity <= 0.0 or sparsity > 1.0:
        return torch.ones_like(flat)
    drop = round(n * sparsity)
    is_lowest = flat == flat.min()
    if int(is_lowest.sum()) < drop:     # the threshold is above the minimum: ties at it stay by index
        return keep_highest(flat, n - drop)
    minimal = torch.nonzero(is_lowest).flatten()
    order = list(range(len(minimal)))
    random.Random(42).shuffle(order)
    mask = torch.ones_like(flat)
    mask[minimal[torch.tensor(order[:drop], dtype=torch.long)]] = 0.0
    return mask


def keep_highest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the k highest scores; of equal ones the first by index (a stable descending
    sort's choice, found by selection: sorting 11M scores takes seconds on a CPU, selecting
    0.2 s). NaN ranks as +inf."""
    mask = torch.zeros_like(flat)
    if k <= 0:
        return mask
    if k >= flat.numel():
        return mask.fill_(1.0)
    flat = flat.nan_to_num(nan=math.inf, posinf=math.inf, neginf=-math.inf)
    threshold = torch.kthvalue(flat, flat.numel() - k + 1)[0]
    above = flat > threshold
    mask[above] = 1.0
    ties = torch.nonzero(flat == threshold).flatten()
    mask[ties[:k - int(above.sum())]] = 1.0
    return mask


def nm_masks(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the n largest-magnitude weights in every group of m consecutive inputs.

    Linear (out, in): groups run along `in`. Conv2d (out, in, kh, kw): along `in` at each
    (out, kh, kw) position, which is what sparse tensor cores expect.
    """
    if weight.dim() == 4:
        per_position = weight.permute(0, 2, 3, 1)  # (out, kh, kw, in)
        mask = nm_masks(per_position.reshape(-1, weight.shape[1]), n, m)
        return mask.reshape(per_position.shape).permute(0, 3, 1, 2).contiguous()
    if weight.dim() != 2:
        raise RecipeError(f"N:M masks need Linear or Conv2d weights, got a tensor of shape {tuple(weight.shape)}")
    if weight.shape[-1] % m:
        raise RecipeError(f"{weight.shape[-1]} input channels cannot be split into groups of {m}")
    groups = weight.detach().abs().reshape(-1, m)
    drop = torch.argsort(groups, dim=1)[:, : m - n]
    return torch.ones_like(groups).scatter_(1, drop, 0.0).reshape(weight.shape)


class MaskType:
    """A recipe's `mask_type`, parsed once: how scores become masks."""

    def __init__(self, spec):
        self.spec, self.nm, self.block = spec, None, None
        if spec == "unstructured":
            return
        if spec == "tensorrt":
            self.nm = (2, 4)
        elif spec == "block4":
            self.block = "block4"
        elif isinstance(spec, str) and re.fullmatch(r"\s*\d+\s*:\s*\d+\s*", spec):
            n, m = (int(v) for v in spec.split(":"))
            if not 0 < n < m:
                raise RecipeError(f"mask_type {spec!r}: N:M needs 0 < N < M")
            self.nm = (n, m)
        elif isinstance(spec, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in spec) \
                and len(spec) >= 2 and all(v == 1 for v in spec[2:]) and all(v >= 1 or v == -1 for v in spec[:2]):
            self.block = list(spec[:2])
        else:
            raise RecipeError(f"unknown mask_type {spec!r}; supported: unstructured, block4, [rows, cols] blocks, "
                              "N:M such as '2:4', tensorrt")

    def __str__(self):
        return f"{self.nm[0]}:{self.nm[1]}" if self.nm else str(self.spec)

    def check_target(self, sparsity: float) -> None:
        if self.nm and sparsity and abs(sparsity - (1 - self.nm[0] / self.nm[1])) > NM_TOLERANCE:
            raise RecipeError(f"mask_type {self} needs sparsity {1 - self.nm[0] / self.nm[1]:g} (1 - N/M), got {sparsity}")

    def masks(self, scores: list[torch.Tensor], targets: list[float], global_sparsity: bool) -> list[torch.Tensor]:
        if self.nm:
            if all(t == 0.0 for t in targets):
                return [torch.ones_like(s) for s in scores]
            for t in targets:
                self.check_target(t)
            return [nm_masks(s, *self.nm) for s in scores]
        if self.block is None:
            return unstructured_masks(scores, targets, global_sparsity)
        grouped = [self._group(s) for s in scores]
        masks = unstructured_masks([g for g, _ in grouped], targets, global_sparsity)
        return [expand(mask) for mask, (_, expand) in zip(masks, grouped)]

    def _group(self, tensor: torch.Tensor):
        """Block means of a score tensor, and how to spread a mask of them back to its shape."""
        shape = tensor.shape
        if self.block == "block4":      # 4 consecutive input channels at each other position
            moved = tensor.movedim(1, -1) if tensor.dim() > 2 else tensor
            pad = -moved.shape[-1] % 4
            if pad:
                fill = moved[..., -(4 - pad):].mean(dim=-1, keepdim=True).expand(*moved.shape[:-1], pad)
                moved = torch.cat([moved, fill], dim=-1)
            means = moved.reshape(-1, 4).mean(dim=1, keepdim=True)

            def expand(mask, moved_shape=moved.shape):
                full = mask.expand(-1, 4).reshape(moved_shape)[..., :moved_shape[-1] - pad]
                return full.movedim(-1, 1).contiguous() if len(shape) > 2 else full.contiguous()
            return means, expand
        if tensor.dim() < 2:
            raise RecipeError(f"block masks need weights of 2 or more dimensions, got shape {tuple(shape)}")
        rows, cols = (shape[i] if b == -1 else b for i, b in enumerate(self.block))
        if shape[0] % rows or shape[1] % cols:
            raise RecipeError(f"mask_type {self.block}: blocks do not divide a parameter of shape {tuple(shape)}")
        blocked = [shape[0] * shape[1] // (rows * cols), rows * cols, -1] if cols > 1 else [shape[0] // rows, rows, -1]
        means = tensor.reshape(blocked).mean(dim=1)

        def expand(mask):
            spread = mask.reshape(means.shape).unsqueeze(1).expand(-1, blocked[1], means.shape[1])
            return spread.reshape(shape).contiguous()
        return means, expand


class PruningModifier(UpdateModifier):
    """Masks over the parameters that `params` names, enforced from start_epoch on.

    params: a list of names and `re:` patterns (matched from the start of each name),
    `__ALL_PRUNABLE__` (every Conv, Linear and Embedding weight) or `__ALL__`. On
    torchvision ResNets, SparseML's own ResNet names (sections.S.B.convK, ...) work too.
    """

    end_comparator = -1

    def __init__(self, params, start_epoch: float = -1.0, end_epoch: float = -1.0, update_frequency: float = -1.0,
                 global_sparsity: bool = False, leave_enabled: bool = True):
        super().__init__(start_epoch, end_epoch, update_frequency)
        self.params = _patterns(self, params)
        self.global_sparsity = _bool(self, "global_sparsity", global_sparsity)
        self.leave_enabled = _bool(self, "leave_enabled", leave_enabled)
        self.names: list[str] = []
        self.parameters: list[nn.Parameter] = []
        self.masks: list[torch.Tensor] = []
        self.enabled = False   # whether the masks are enforced
        self._masks_changed = False

    def targets(self, module: nn.Module) -> list[tuple[str, nn.Module, str]]:
        """(full name, layer, attribute) of every parameter this modifier prunes, in model order."""
        return find_parameters(module, self.params, type(self).__name__)

    def initialize(self, module, epoch=0.0, **kwargs):
        super().initialize(module, epoch, **kwargs)
        found = self.targets(module)
        self.names = [name for name, _, _ in found]
        self.parameters = [getattr(layer, attr) for _, layer, attr in found]
        self.masks = [torch.ones_like(p.data) for p in self.parameters]

    def masked(self, grads) -> list[torch.Tensor]:
        """Gradients of the pruned parameters (from torch.autograd.grad) as training sees them."""
        return [g * m for g, m in zip(grads, self.masks)] if self.enabled else list(grads)

    def apply(self) -> None:
        """Zero the pruned weights (while the masks are enforced)."""
        if not self.enabled:
            return
        with torch.no_grad():
            for param, mask in zip(self.parameters, self.masks):
                param.data.mul_(mask)

    def set_masks(self, masks: list[torch.Tensor]) -> None:
        for mask, param in zip(masks, self.parameters):
            if mask.shape != param.shape:
                raise RecipeError(f"{type(self).__name__}: a mask of shape {tuple(mask.shape)} for a parameter of "
                                  f"shape {tuple(param.shape)}")
        # in each parameter's memory format: masking its gradient in place then runs at memory speed
        self.masks = [torch.empty_like(p.data).copy_(m.detach()) for m, p in zip(masks, self.parameters)]
        self._masks_changed = True
        self.apply()

    def new_masks(self, epoch: float, steps_per_epoch: int) -> list[torch.Tensor] | None:
        """The masks of a mask update at `epoch`; None keeps the current ones."""
        return None

    def update(self, module, optimizer, epoch, steps_per_epoch):
        started = self.started
        if self.start_pending(epoch):
            self.enabled = started = True
        if started:
            masks = self.new_masks(epoch, steps_per_epoch)
            if masks is not None:
                self.set_masks(masks)
        if self.end_pending(epoch) and not self.leave_enabled:
            self.enabled = False

    def optimizer_pre_step(self, module, optimizer, epoch, steps_per_epoch):
        # before this step's scheduled updates (RecipeStep.step), so under the masks its
        # backward pass ran with, as SparseML's gradient hooks mask; in place, after any
        # DistributedDataParallel all-reduce
        if self.enabled:
            with torch.no_grad():
                for param, mask in zip(self.parameters, self.masks):
                    if param.grad is not None:
                        param.grad.mul_(mask)

    def optimizer_post_step(self, module, optimizer, epoch, steps_per_epoch):
        # the step after a mask change moved the newly pruned weights: their gradients were
        # computed before it, and their momentum is their own
        if self._masks_changed and self.enabled:
            self.apply()
            self._zero_pruned_state(optimizer)

    def _zero_pruned_state(self, optimizer) -> None:
        """Zero the optimizer's state (momentum, Adam's moments) of pruned weights after each mask
        change: with it zero and their gradients masked, SGD and Adam steps leave them at zero.
        Left alone, that state would only decay, and a decaying float32 stalls at the smallest
        denormals (0.9 x 5.6e-45 rounds back to 5.6e-45), on which CPUs compute many times slower
        (a 99% run at 32 px trained at half its dense speed)."""
        with torch.no_grad():
            for param, mask in zip(self.parameters, self.masks):
                pruned = mask == 0
                for value in optimizer.state.get(param, {}).values():
                    if torch.is_tensor(value) and value.shape == param.shape:
                        value.masked_fill_(pruned, 0)
        self._masks_changed = False

    def finalize(self, module=None):
        self.apply()
        self.enabled = False
        super().finalize(module)

    def state_dict(self):
        # masks are 0/1: as bool they take a quarter of the checkpoint space float would
        return {**super().state_dict(), "enabled": self.enabled,
                "masks": {name: mask.bool() for name, mask in zip(self.names, self.masks)}}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        masks = state["masks"]
        missing = [n for n in self.names if n not in masks]
        if missing:
            raise RecipeError(f"{type(self).__name__}: the saved state has no mask for {missing[0]}")
        self.enabled = bool(state["enabled"])
        self.set_masks([masks[n] for n in self.names])


class GradualPruningModifier(PruningModifier):
    """Raises sparsity from init_sparsity to final_sparsity between start and end epoch.

    final_sparsity may map sparsities to the parameters they apply to
    (`{0.9: ["re:layer4.*"], 0.7: [...]}`), with `params` left empty.
    """

    def __init__(self, params=None, init_sparsity: float = 0.05, final_sparsity=0.9, start_epoch: float = -1.0,
                 end_epoch: float = -1.0, update_frequency: float = -1.0, inter_func: str = "cubic",
                 mask_type="unstructured", global_sparsity: bool = False, leave_enabled: bool = True):
        name = type(self).__name__
        self.per_parameter = None
        if isinstance(final_sparsity, dict):
            if params:
                raise RecipeError(f"{name}: with a final_sparsity map, params must be empty (the map names them)")
            self.per_parameter = {_sparsity(self, "final_sparsity", k): _patterns(self, v)
                                  for k, v in final_sparsity.items()}
            params = [p for patterns in self.per_parameter.values() for p in patterns]
        else:
            final_sparsity = _sparsity(self, "final_sparsity", final_sparsity)
        super().__init__(params or "__ALL_PRUNABLE__", start_epoch, end_epoch, update_frequency, global_sparsity,
                         leave_enabled)
        self.final_sparsity = final_sparsity
        self.init_sparsity = _sparsity(self, "init_sparsity", init_sparsity, final=False)
        if inter_func not in INTER_FUNCS:
            raise RecipeError(f"{name}: inter_func {inter_func!r} is not one of {', '.join(INTER_FUNCS)}")
        self.inter_func = inter_func
        self.mask_type = MaskType(mask_type)
        for target in [self.init_sparsity, *((self.per_parameter or {final_sparsity: None}).keys())]:
            self.mask_type.check_target(target)
        self.final_sparsities: list[float] = []

    def targets(self, module):
        if self.per_parameter is None:
            found = super().targets(module)
            self.final_sparsities = [self.final_sparsity] * len(found)
            return found
        found, seen, self.final_sparsities = [], set(), []
        for sparsity, patterns in self.per_parameter.items():
            for entry in find_parameters(module, patterns, type(self).__name__):
                if entry[0] not in seen:
                    seen.add(entry[0])
                    found.append(entry)
                    self.final_sparsities.append(sparsity)
        return found

    def sparsity_targets(self, epoch: float) -> list[float]:
        return [interpolate(epoch, self.start_epoch, self.end_epoch, self.init_sparsity, final, self.inter_func)
                for final in self.final_sparsities]

    def scores(self) -> list[torch.Tensor]:
        """Higher is kept: magnitude here."""
        return [p.data.abs() for p in self.parameters]

    def select(self, scores: list[torch.Tensor], targets: list[float]) -> list[torch.Tensor]:
        return self.mask_type.masks(scores, targets, self.global_sparsity)

    def new_masks(self, epoch, steps_per_epoch):
        return self.select(self.scores(), self.sparsity_targets(epoch))


class GMPruningModifier(GradualPruningModifier):
    """Gradual magnitude pruning, layer by layer unless global_sparsity: true."""

    def __init__(self, init_sparsity: float, final_sparsity, start_epoch: float, end_epoch: float,
                 update_frequency: float, params=None, leave_enabled: bool = True, inter_func: str = "cubic",
                 mask_type="unstructured", global_sparsity: bool = False, phased: bool = False,
                 score_type: str = "magnitude"):
        if phased:
            raise RecipeError("GMPruningModifier: phased (AC/DC) pruning is not supported")
        if score_type != "magnitude":
            raise RecipeError(f"GMPruningModifier: score_type {score_type!r} is not supported; only magnitude")
        super().__init__(params, init_sparsity, final_sparsity, start_epoch, end_epoch, update_frequency, inter_func,
                         mask_type, global_sparsity, leave_enabled)


class MagnitudePruningModifier(GradualPruningModifier):
    """Gradual magnitude pruning, layer by layer."""

    ranks_globally = False

    def __init__(self, init_sparsity: float, final_sparsity, start_epoch: float, end_epoch: float,
                 update_frequency: float, params=None, leave_enabled: bool = True, inter_func: str = "cubic",
                 mask_type="unstructured"):
        super().__init__(params, init_sparsity, final_sparsity, start_epoch, end_epoch, update_frequency, inter_func,
                         mask_type, self.ranks_globally, leave_enabled)


class GlobalMagnitudePruningModifier(MagnitudePruningModifier):
    """Gradual magnitude pruning, ranking the weights of all its parameters together."""

    ranks_globally = True


class ConstantPruningModifier(PruningModifier):
    """Holds the zeros the parameters have at start_epoch until end_epoch (or for good)."""

    def __init__(self, params, start_epoch: float = -1.0, end_epoch: float = -1.0, update_frequency: float = -1.0):
        super().__init__(params, start_epoch, end_epoch, -1.0, False, leave_enabled=False)

    def new_masks(self, epoch, steps_per_epoch):
        return [(p.data != 0).to(p.dtype) for p in self.parameters]


def _patterns(modifier, params) -> list[str]:
    name = type(modifier).__name__
    if isinstance(params, str):
        if params.upper() not in ("__ALL__", "__ALL_PRUNABLE__"):
            raise RecipeError(f"{name}: params {params!r} must be a list of names or patterns, "
                              "__ALL_PRUNABLE__ or __ALL__")
        return [params.upper()]
    if isinstance(params, list) and params and all(isinstance(p, str) for p in params):
        return list(params)
    raise RecipeError(f"{name}: params must be a non-empty list of names or patterns, got {params!r}")


def _sparsity(modifier, key: str, value, final: bool = True) -> float:
    name = type(modifier).__name__
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise RecipeError(f"{name}: {key} must be a number, got {value!r}")
    if not (0.0 <= value < 1.0 if final else 0.0 <= value <= 1.0):
        raise RecipeError(f"{name}: {key} {value} is not in [0, 1)")
    return float(value)


def _bool(modifier, key: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise RecipeError(f"{type(modifier).__name__}: {key} must be true or false, got {value!r}")
