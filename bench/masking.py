"""What enforcing pruning masks costs a CPU training step.

SparseML multiplies each pruned weight tensor by its mask before every forward pass of its
layer and after every optimizer step, and each gradient by its mask. The pruning modifiers
now mask gradients only, zeroing the pruned weights and their optimizer state at each mask
change, after which SGD and Adam leave them at zero (`tests/test_executor.py` checks both
ways end bit for bit alike). This times `compress`'s training step (`training_speed.Trainer`:
loader, 90% masks, autocast, fused SGD) three ways, interleaved round by round at each image
size: masks enforced as now, SparseML's way, and not at all (what a dense run does).

    python bench/masking.py --threads 1           # 32 and 64 px, batch 64, one thread as in a sweep
    python bench/masking.py --sizes 64 --rounds 8

Writes bench/results/masking.json (or --out) and prints a Markdown table.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from training_speed import RESULTS, Trainer, time_ways, write_ways  # noqa: E402


def _restore(pruning, hooks=()):
    """Back to masks enforced as now; unmasked steps moved the pruned weights and their momentum."""
    for hook in hooks:
        hook.remove()
    pruning.__dict__.pop("optimizer_post_step", None)
    pruning._enable()
    pruning.set_masks(pruning.masks)


def now(trainer: Trainer):
    return lambda: None


def unmasked(trainer: Trainer):
    pruning = trainer.step_fn.manager.modifiers[0]
    pruning._disable()
    return partial(_restore, pruning)


def _mask_weight(param, mask, module, inputs):
    param.data.mul_(mask)


def sparseml(trainer: Trainer):
    """Weights masked before every forward pass of their layer and after every step, as SparseML does."""
    pruning = trainer.step_fn.manager.modifiers[0]
    layers = {id(getattr(m, "weight", None)): m for m in trainer.model.modules()}
    hooks = [layers[id(p)].register_forward_pre_hook(partial(_mask_weight, p, m))
             for p, m in zip(pruning.parameters, pruning.masks)]
    after_step = pruning.optimizer_post_step

    def post_step(*args):
        pruning.apply()
        after_step(*args)
    pruning.optimizer_post_step = post_step
    return partial(_restore, pruning, hooks)


def main():
    ways = {"now": now, "sparseml": sparseml, "unmasked": unmasked}
    args, rows = time_ways(__doc__.splitlines()[0], RESULTS / "masking.json", ways, rounds=4, steps=8)
    for r in rows:
        ips = r["images_per_s"]
        r["speed_now_over_sparseml"] = ips["now"] / ips["sparseml"]
        r["speed_now_over_unmasked"] = ips["now"] / ips["unmasked"]
    write_ways(args, rows)
    print("\n| image size | images/s now | SparseML's way | unmasked (dense) | now / SparseML's way "
          "| now / unmasked |\n|---|---|---|---|---|---|")
    for r in rows:
        ips = r["images_per_s"]
        print(f"| {r['size']} px | {ips['now']:.1f} | {ips['sparseml']:.1f} | {ips['unmasked']:.1f} "
              f"| {r['speed_now_over_sparseml']:.2f}x | {r['speed_now_over_unmasked']:.2f}x |")


if __name__ == "__main__":
    main()
