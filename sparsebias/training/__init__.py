"""Training one run: models, the training loop the recipe executor drives, checkpoints for
resuming, and `compress`, which trains, prunes, exports and writes a verified bundle."""

from .pipeline import compress

__all__ = ["compress"]
