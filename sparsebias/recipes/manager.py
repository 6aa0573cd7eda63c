"""Run a recipe's modifiers over training, as SparseML's ScheduledModifierManager does.

    manager.initialize(model, epoch=0.0, score_data=...)
    step = manager.modify(model, optimizer, steps_per_epoch)
    ... loss.backward(); step.step()       # modifiers update, the optimizer steps, masks hold
    manager.finalize(model)

Modifiers run in SparseML's order: by end epoch (never-ending ones last), then start
epoch; ties keep the recipe's order (SparseML broke them by a hash of the arguments). A
staged recipe's stages are each ordered so, then run in order of their last end and first
start epoch, as SparseML orders them.
"""

from __future__ import annotations

import math

from ..core.errors import SparsebiasError
from ..modifiers.base import Modifier, RecipeError


def _order(modifier: Modifier) -> tuple:
    end = modifier.end_epoch
    return (1 if end == -1 else 0, end, modifier.start_epoch)


def _stage_order(modifiers: list[Modifier]) -> tuple:
    last = max(modifiers, key=lambda m: m.end_epoch).end_epoch
    return (1 if last == -1 else 0, last, min(m.start_epoch for m in modifiers))


class RecipeManager:
    def __init__(self, modifiers: list[Modifier], stages: list[str] | None = None):
        """`stages`: each modifier's stage name in a staged recipe."""
        grouped: dict[str, list[Modifier]] = {}
        for modifier, stage in zip(modifiers, stages or [""] * len(modifiers)):
            grouped.setdefault(stage, []).append(modifier)
        ordered = sorted((sorted(group, key=_order) for group in grouped.values()), key=_stage_order)
        self.modifiers = [m for group in ordered for m in group]
        self.initialize_epoch = 0.0

    def iter_modifiers(self):
        return iter(self.modifiers)

    @property
    def max_epochs(self) -> int:
        """The last epoch any modifier starts or ends at, rounded up; -1 if none says."""
        epochs = [math.ceil(e) for m in self.modifiers for e in (m.start_epoch, m.end_epoch) if e > -1]
        return max(epochs, default=-1)

    def initialize(self, module, epoch: float = 0.0, **kwargs) -> None:
        self.initialize_epoch = epoch
        for modifier in self.modifiers:
            if not modifier.initialized:
                modifier.initialize(module, epoch, **kwargs)

    def modify(self, module, optimizer, steps_per_epoch: int, epoch: float | None = None, **kwargs) -> "RecipeStep":
        epoch = self.initialize_epoch if epoch is None else epoch
        if not all(m.initialized for m in self.modifiers):
            self.initialize(module, epoch, **kwargs)
        return RecipeStep(self, module, optimizer, steps_per_epoch, epoch)

    def finalize(self, module=None) -> None:
        for modifier in self.modifiers:
            modifier.finalize(module)

    def state_dict(self) -> dict:
        return {str(i): m.state_dict() for i, m in enumerate(self.modifiers)}

    def state_of(self, modifier: Modifier, state: dict) -> dict:
        """One modifier's part of a state_dict() of this manager."""
        return state[str(self.modifiers.index(modifier))]

    def load_state_dict(self, state: dict) -> None:
        """Restore a state_dict() of this recipe; a state of another recipe (or of sparseml, which
        wrote checkpoints before sparsebias ran recipes itself) is refused in one line."""
        try:
            if sorted(state) != sorted(map(str, range(len(self.modifiers)))):
                raise KeyError("modifiers")
            for i, modifier in enumerate(self.modifiers):
                modifier.load_state_dict(state[str(i)])
        except (KeyError, TypeError, RecipeError) as e:
            raise SparsebiasError(f"the checkpoint's recipe state does not fit this recipe ({e}); "
                                  "start the run afresh, without --resume") from None


class RecipeStep:
    """Stands in for the optimizer: `step()` updates the modifiers around the optimizer's step."""

    def __init__(self, manager: RecipeManager, module, optimizer, steps_per_epoch: int, epoch: float):
        if steps_per_epoch <= 0:
            raise ValueError("steps_per_epoch must be positive")
        self.manager, self.module, self.optimizer = manager, module, optimizer
        self.steps_per_epoch = steps_per_epoch
        self.steps = round(epoch * steps_per_epoch)
        self.epoch = epoch

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, scaler=None) -> None:
        """Modifiers see the step's gradients (optimizer_pre_step) before scheduled updates change
        the model. With a gradient scaler (fp16), the scaler steps the optimizer (skipping steps
        whose gradients overflowed) and updates its scale; the modifiers run either way."""
        args = (self.module, self.optimizer, self.epoch, self.steps_per_epoch)
        for modifier in self.manager.modifiers:
            modifier.optimizer_pre_step(*args)
        for modifier in self.manager.modifiers:
            if modifier.update_ready(self.epoch, self.steps_per_epoch):
                modifier.scheduled_update(*args)
        if scaler is None:
            self.optimizer.step()
        else:
            scaler.step(self.optimizer)
            scaler.update()
        for modifier in self.manager.modifiers:
            modifier.optimizer_post_step(*args)
        self.steps += 1
        whole, part = divmod(self.steps, self.steps_per_epoch)
        self.epoch = float(whole) + float(part) / float(self.steps_per_epoch)
