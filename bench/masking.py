"""What enforcing pruning masks costs a CPU training step.

SparseML multiplies each pruned weight tensor by its mask before every forward pass of its
layer and after every optimizer step, and replaces each gradient by a masked copy (a hook on
the weight). The pruning modifiers now multiply the gradients by the masks in place before
each optimizer step, and zero the pruned weights and their optimizer state at each mask
change only, after which SGD and Adam leave them at zero (`tests/test_executor.py` checks
both ways end bit for bit alike). This times `compress`'s training step
(`training_speed.Trainer`: loader, 90% masks, autocast, fused SGD) four ways, interleaved
round by round at each image size: masks enforced as now, by masked copies of the
gradients (as the modifiers did before), SparseML's way, and not at all (what a dense run does).

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


def _restore(pruning, handles=()):
    """Back to masks enforced as now; unmasked steps moved the pruned weights and their momentum."""
    for handle in handles:
        handle.remove()
    pruning.enabled = True
    pruning.set_masks(pruning.masks)


def now(trainer: Trainer):
    return lambda: None


def unmasked(trainer: Trainer):
    pruning = trainer.pruning
    pruning.enabled = False
    return partial(_restore, pruning)


def _masked_copy(mask, grad):
    return grad * mask


def _copying_hooks(pruning) -> list:
    return [p.register_hook(partial(_masked_copy, m)) for p, m in zip(pruning.parameters, pruning.masks)]


def copies(trainer: Trainer):
    """Gradients replaced by masked copies (a hook on each weight), as the modifiers did before."""
    pruning = trainer.pruning
    pruning.enabled = False
    return partial(_restore, pruning, _copying_hooks(pruning))


def _mask_weight(param, mask, *args):
    param.data.mul_(mask)


def _mask_weights(pruning, *args):
    for param, mask in zip(pruning.parameters, pruning.masks):
        param.data.mul_(mask)


def sparseml(trainer: Trainer):
    """Gradients replaced by masked copies, weights masked before every forward pass of their
    layer and after every step, as SparseML does."""
    pruning = trainer.pruning
    pruning.enabled = False
    layers = {id(getattr(m, "weight", None)): m for m in trainer.model.modules()}
    handles = _copying_hooks(pruning)
    handles += [layers[id(p)].register_forward_pre_hook(partial(_mask_weight, p, m))
                for p, m in zip(pruning.parameters, pruning.masks)]
    handles.append(trainer.step_fn.optimizer.register_step_post_hook(partial(_mask_weights, pruning)))
    return partial(_restore, pruning, handles)


def main():
    ways = {"now": now, "copies": copies, "sparseml": sparseml, "unmasked": unmasked}
    args, rows = time_ways(__doc__.splitlines()[0], RESULTS / "masking.json", ways, rounds=4, steps=8)
    for r in rows:
        ips = r["images_per_s"]
        r["speed_now_over"] = {way: ips["now"] / ips[way] for way in ("copies", "sparseml", "unmasked")}
    write_ways(args, rows)
    print("\n| image size | images/s now | copies | SparseML's way | unmasked (dense) | now / copies "
          "| now / SparseML's way | now / unmasked |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        ips, ratio = r["images_per_s"], r["speed_now_over"]
        print(f"| {r['size']} px | {ips['now']:.1f} | {ips['copies']:.1f} | {ips['sparseml']:.1f} | "
              f"{ips['unmasked']:.1f} | {ratio['copies']:.2f}x | {ratio['sparseml']:.2f}x | {ratio['unmasked']:.2f}x |")


if __name__ == "__main__":
    main()
