"""Scheduled modifiers with SparseML 1.8's semantics: the schedule and the training ones.

Each modifier has a start and an end epoch (-1: at once / never). The manager calls
`update` before an optimizer step whenever `update_ready(epoch)` says so: at the first
step on or after the start, at the first step on or after the end, and for update
modifiers in between, every `update_frequency` epochs (-1: every step). Epochs are
fractional: step s of an epoch of n steps is epoch e + s / n.

A recipe's `!Name` finds a modifier by its class name in the executor's registry
(sparsebias.recipes.MODIFIERS), which lists these and the pruning modifiers explicitly.
"""

from __future__ import annotations

import math
import sys
import warnings

import torch


class RecipeError(ValueError):
    """A modifier's arguments are invalid; the recipe loader adds file and line."""


class Modifier:
    """A modifier active from `start_epoch` to `end_epoch`.

    end_comparator, as SparseML's: None: end must stay -1; -1: end may be -1 or >= start;
    0: end >= start; 1: end > start.
    """

    end_comparator: int | None = 0

    def __init__(self, start_epoch: float = -1.0, end_epoch: float = -1.0):
        self.start_epoch, self.end_epoch = number(self, "start_epoch", start_epoch), number(self, "end_epoch", end_epoch)
        self._validate_schedule()
        self.initialized = False
        self.started = self.ended = False

    def _validate_schedule(self):
        start, end, name = self.start_epoch, self.end_epoch, type(self).__name__
        if start < -1 or end < -1:
            raise RecipeError(f"{name}: start_epoch and end_epoch must be -1 or at least 0 (got {start:g} and {end:g})")
        if self.end_comparator is None and end != -1:
            raise RecipeError(f"{name} takes no end_epoch (got {end:g})")
        if self.end_comparator == -1 and end != -1 and end < start:
            raise RecipeError(f"{name}: end_epoch {end:g} is before start_epoch {start:g}")
        if self.end_comparator == 0 and start > end:
            raise RecipeError(f"{name}: end_epoch {end:g} is before start_epoch {start:g}")
        if self.end_comparator == 1 and start >= end:
            raise RecipeError(f"{name}: end_epoch {end:g} must be after start_epoch {start:g}")

    # the life cycle the manager drives
    def initialize(self, module: torch.nn.Module, epoch: float = 0.0, **kwargs) -> None:
        self.initialized = True

    def start_pending(self, epoch: float) -> bool:
        return not self.started and not self.ended and (epoch >= self.start_epoch >= 0.0 or self.start_epoch == -1.0)

    def end_pending(self, epoch: float) -> bool:
        return not self.ended and self.started and epoch >= self.end_epoch >= 0.0

    def update_ready(self, epoch: float, steps_per_epoch: int) -> bool:
        return self.start_pending(epoch) or self.end_pending(epoch)

    def scheduled_update(self, module, optimizer, epoch: float, steps_per_epoch: int) -> None:
        self.update(module, optimizer, epoch, steps_per_epoch)
        if self.start_pending(epoch):
            self.started = True
        if self.end_pending(epoch):
            self.ended = True

    def update(self, module, optimizer, epoch: float, steps_per_epoch: int) -> None:
        pass

    def optimizer_pre_step(self, module, optimizer, epoch: float, steps_per_epoch: int) -> None:
        pass

    def optimizer_post_step(self, module, optimizer, epoch: float, steps_per_epoch: int) -> None:
        pass

    def finalize(self, module=None) -> None:
        self.initialized = False

    def state_dict(self) -> dict:
        return {"started": self.started, "ended": self.ended}

    def load_state_dict(self, state: dict) -> None:
        self.started, self.ended = bool(state["started"]), bool(state["ended"])


class UpdateModifier(Modifier):
    """A modifier that also updates every `update_frequency` epochs between start and end."""

    def __init__(self, start_epoch: float = -1.0, end_epoch: float = -1.0, update_frequency: float = -1.0):
        super().__init__(start_epoch, end_epoch)
        self.update_frequency = number(self, "update_frequency", update_frequency)
        if self.update_frequency < -1:
            raise RecipeError(f"{type(self).__name__}: update_frequency must be -1 or positive")
        self.last_update_epoch = -1.0

    def update_ready(self, epoch: float, steps_per_epoch: int) -> bool:
        every = self.update_frequency == -1.0 or (
            self.last_update_epoch >= 0.0 and epoch >= self.last_update_epoch + self.update_frequency)
        return super().update_ready(epoch, steps_per_epoch) or (
            self.started and epoch > self.start_epoch and not self.ended and every)

    def scheduled_update(self, module, optimizer, epoch: float, steps_per_epoch: int) -> None:
        self.last_update_epoch = epoch
        super().scheduled_update(module, optimizer, epoch, steps_per_epoch)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "last_update_epoch": self.last_update_epoch}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.last_update_epoch = float(state["last_update_epoch"])


class EpochRangeModifier(Modifier):
    """Sets how long training runs (the manager's max_epochs); changes nothing else."""

    end_comparator = -1

    def __init__(self, start_epoch: float, end_epoch: float):
        super().__init__(start_epoch, end_epoch)


def _groups(optimizer, indices, name: str):
    if not indices:
        return optimizer.param_groups
    try:
        return [optimizer.param_groups[i] for i in indices]
    except (IndexError, TypeError):
        raise RecipeError(f"{name}: param_groups {indices} do not exist; the optimizer has "
                          f"{len(optimizer.param_groups)}") from None


class SetLearningRateModifier(Modifier):
    """Sets the learning rate once, at start_epoch."""

    end_comparator = None

    def __init__(self, learning_rate: float, param_groups: list | None = None, start_epoch: float = -1.0,
                 end_epoch: float = -1.0, constant_logging: bool = False):
        super().__init__(start_epoch, -1.0)
        self.learning_rate = number(self, "learning_rate", learning_rate)
        if not 0.0 < self.learning_rate <= 1.0:
            raise RecipeError(f"SetLearningRateModifier: learning_rate must be in (0, 1], got {self.learning_rate}")
        self.param_groups = param_groups
        self._lr_set = False

    def update(self, module, optimizer, epoch, steps_per_epoch):
        if (self.start_epoch < 0.0 or self.start_epoch - epoch < sys.float_info.epsilon) and not self._lr_set:
            for group in _groups(optimizer, self.param_groups, type(self).__name__):
                group["lr"] = self.learning_rate
            self._lr_set = True

    def state_dict(self):
        return {**super().state_dict(), "lr_set": self._lr_set}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._lr_set = bool(state["lr_set"])


class LearningRateFunctionModifier(UpdateModifier):
    """Sets the learning rate at every step from init_lr to final_lr: linear, cosine or
    cyclic_linear (restarting every cycle_epochs)."""

    end_comparator = 1
    FUNCTIONS = ("linear", "cosine", "cyclic_linear")

    def __init__(self, lr_func: str, init_lr: float, final_lr: float, start_epoch: float, end_epoch: float,
                 cycle_epochs: float = 1.0, param_groups: list | None = None, update_frequency: float = -1.0):
        super().__init__(start_epoch, end_epoch, -1.0)
        if lr_func not in self.FUNCTIONS:
            raise RecipeError(f"LearningRateFunctionModifier: lr_func {lr_func!r} is not one of "
                              f"{', '.join(self.FUNCTIONS)}")
        self.lr_func, self.param_groups = lr_func, param_groups
        self.init_lr, self.final_lr = number(self, "init_lr", init_lr), number(self, "final_lr", final_lr)
        self.cycle_epochs = number(self, "cycle_epochs", cycle_epochs)
        for key in ("init_lr", "final_lr"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise RecipeError(f"LearningRateFunctionModifier: {key} must be in [0, 1], got {getattr(self, key)}")
        if lr_func == "cyclic_linear" and self.cycle_epochs <= 0:
            raise RecipeError("LearningRateFunctionModifier: cycle_epochs must be positive")
        if update_frequency != -1.0:
            raise RecipeError("LearningRateFunctionModifier: update_frequency must stay -1 (every step)")

    def update(self, module, optimizer, epoch, steps_per_epoch):
        lr = getattr(self, f"_{self.lr_func}")(epoch, steps_per_epoch)
        for group in _groups(optimizer, self.param_groups, type(self).__name__):
            group["lr"] = lr

    def _linear(self, epoch, steps_per_epoch):
        start = max(self.start_epoch, 0.0)
        return self.init_lr + (epoch - start) / (self.end_epoch - start) * (self.final_lr - self.init_lr)

    def _cosine(self, epoch, steps_per_epoch):
        start = max(self.start_epoch, 0.0)
        x = (epoch - start) / (self.end_epoch - start)
        if self.final_lr < self.init_lr:
            span, shift, phase = self.init_lr - self.final_lr, self.final_lr, 0.0
        else:
            span, shift, phase = self.final_lr - self.init_lr, self.init_lr, math.pi
        return math.cos(x * math.pi + phase) * span / 2 + span / 2 + shift

    def _cyclic_linear(self, epoch, steps_per_epoch):
        start_step, end_step = self.start_epoch * steps_per_epoch, self.end_epoch * steps_per_epoch
        cycle_steps = self.cycle_epochs * steps_per_epoch
        step = (epoch - self.start_epoch) * steps_per_epoch
        if step > int((end_step - start_step) / cycle_steps) * cycle_steps:
            cycle_steps = (end_step - start_step) % cycle_steps   # the last, shorter cycle
        return self.init_lr - (step % cycle_steps) / (cycle_steps - 1) * (self.init_lr - self.final_lr)


class LearningRateModifier(UpdateModifier):
    """A torch scheduler (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingWarmRestarts)
    stepped per optimizer step, with its epochs in lr_kwargs converted to steps."""

    end_comparator = -1
    CLASSES = ("StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingWarmRestarts")

    def __init__(self, lr_class: str, lr_kwargs: dict, init_lr: float, start_epoch: float, end_epoch: float = -1.0,
                 update_frequency: float = -1.0, constant_logging: bool = False):
        super().__init__(start_epoch, end_epoch, -1.0)
        if lr_class not in self.CLASSES:
            raise RecipeError(f"LearningRateModifier: lr_class {lr_class!r} is not one of {', '.join(self.CLASSES)}")
        if not isinstance(lr_kwargs, dict):
            raise RecipeError("LearningRateModifier: lr_kwargs must be a mapping")
        needed = {"StepLR": ("gamma", "step_size"), "ExponentialLR": ("gamma",), "MultiStepLR": ("gamma", "milestones"),
                  "CosineAnnealingWarmRestarts": ("lr_min", "cycle_epochs")}[lr_class]
        missing = [k for k in needed if k not in lr_kwargs]
        if missing:
            raise RecipeError(f"LearningRateModifier: {lr_class} needs {missing[0]} in lr_kwargs")
        self.lr_class, self.lr_kwargs = lr_class, dict(lr_kwargs)
        self.init_lr = number(self, "init_lr", init_lr)
        if not 0.0 < self.init_lr <= 1.0:
            raise RecipeError(f"LearningRateModifier: init_lr must be in (0, 1], got {self.init_lr}")
        if lr_class == "MultiStepLR":
            for mile in self.lr_kwargs["milestones"]:
                if mile <= start_epoch or 0.0 <= end_epoch <= mile:
                    raise RecipeError(f"LearningRateModifier: milestones {self.lr_kwargs['milestones']} must lie "
                                      f"after start_epoch {start_epoch:g} and before end_epoch {end_epoch:g}")
        self._scheduler = None
        self._scheduler_steps = 0
        self._resumed = None   # a scheduler state to restore when the scheduler is made

    def update(self, module, optimizer, epoch, steps_per_epoch):
        if self._scheduler is None and self._resumed is None and self.init_lr:
            for group in optimizer.param_groups:
                group["lr"] = self.init_lr
        if epoch <= sys.float_info.epsilon:
            self._scheduler_steps -= 1
            return
        if self.end_epoch >= 0.0 and abs(self.end_epoch - epoch) <= sys.float_info.epsilon:
            return
        if self._scheduler is not None:
            self._advance(epoch, steps_per_epoch)
            return
        self._scheduler = self._make_scheduler(optimizer, steps_per_epoch)
        if self._resumed is not None:
            self._scheduler.load_state_dict(self._resumed)
            self._resumed = None
        else:
            self._scheduler_steps += round(epoch * steps_per_epoch)
        with warnings.catch_warnings():
            # torch checks a new scheduler's first step only: the schedule follows the global step,
            # set before this step's optimizer.step() as SparseML's manager does, so none was skipped
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            self._advance(epoch, steps_per_epoch)

    def _advance(self, epoch: float, steps_per_epoch: int) -> None:
        if self.lr_class == "CosineAnnealingWarmRestarts":
            self._scheduler.step(epoch - self.start_epoch if self.start_epoch >= 0.0 else 0.0)
            return
        last = self.end_epoch if 0.0 <= self.end_epoch < epoch else epoch
        global_step = round(last * steps_per_epoch)
        for _ in range(global_step - self._scheduler_steps):
            self._scheduler.step()
        self._scheduler_steps = max(self._scheduler_steps, global_step)

    def _make_scheduler(self, optimizer, steps_per_epoch: int):
        kwargs, schedulers = dict(self.lr_kwargs), torch.optim.lr_scheduler
        if self.lr_class in ("StepLR", "ExponentialLR"):
            step_size = 1.0 if self.lr_class == "ExponentialLR" else kwargs["step_size"]
            return schedulers.StepLR(optimizer, step_size=round(step_size * steps_per_epoch), gamma=kwargs["gamma"])
        if self.lr_class == "MultiStepLR":
            milestones = [round((m - self.start_epoch) * steps_per_epoch) for m in kwargs["milestones"]]
            return schedulers.MultiStepLR(optimizer, milestones=milestones, gamma=kwargs["gamma"])
        return schedulers.CosineAnnealingWarmRestarts(optimizer, T_0=kwargs["cycle_epochs"], eta_min=kwargs["lr_min"])

    def state_dict(self):
        scheduler = self._scheduler.state_dict() if self._scheduler is not None else None
        return {**super().state_dict(), "scheduler": scheduler, "scheduler_steps": self._scheduler_steps}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._scheduler_steps = int(state["scheduler_steps"])
        self._resumed = state["scheduler"]


class SetWeightDecayModifier(Modifier):
    """Sets the optimizer's weight decay once, at start_epoch."""

    end_comparator = -1

    def __init__(self, weight_decay: float, start_epoch: float = -1.0, param_groups: list | None = None,
                 end_epoch: float = -1.0, constant_logging: bool = False):
        super().__init__(start_epoch, -1.0)
        self.weight_decay = number(self, "weight_decay", weight_decay)
        self.param_groups = param_groups

    def update(self, module, optimizer, epoch, steps_per_epoch):
        if self.start_pending(epoch):
            for group in _groups(optimizer, self.param_groups, type(self).__name__):
                group["weight_decay"] = self.weight_decay


def number(modifier, key: str, value) -> float:
    """A modifier's numeric field as a finite float: nan or inf would pass every comparison
    that validates a schedule (nan) or break the epoch count later (inf)."""
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        result = float(value)
    except (ValueError, OverflowError):
        raise RecipeError(f"{type(modifier).__name__}: {key} must be a number, got {value!r}") from None
    if not math.isfinite(result):
        raise RecipeError(f"{type(modifier).__name__}: {key} must be a finite number, got {value!r}")
    return result
