"""What enforcing pruning masks costs a CPU training step.

SparseML multiplies each pruned weight tensor by its mask before every forward pass of its
layer and after every optimizer step, and each gradient by its mask. The pruning modifiers
now mask gradients only, zeroing the pruned weights and their optimizer state at each mask
change, after which SGD and Adam leave them at zero (`tests/test_executor.py` checks both
ways end bit for bit alike). This times `compress`'s training step (`training_speed.Trainer`:
loader, 90% masks, autocast, fused SGD) three ways, interleaved round by round at each image
size: masks enforced as now, SparseML's way, and not at all (what a dense run does).

    python bench/masking.py                       # 32 and 64 px, batch 64, one thread (a sweep's)
    python bench/masking.py --threads 2 --sizes 64

Writes bench/results/masking.json (or --out) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from training_speed import RESULTS, Trainer  # noqa: E402

from sparsebias.core.devices import resolve_device, resolve_precision  # noqa: E402
from sparsebias.engines.benchmark import machine  # noqa: E402

WAYS = ("now", "sparseml", "unmasked")


def enforce(trainer: Trainer, way: str) -> list:
    """Set how the trainer's pruning modifier enforces its masks; returns the hooks to remove."""
    pruning = trainer.step_fn.manager.modifiers[0]
    if way == "now":
        return []
    hooks = []
    pruning._disable()
    if way == "sparseml":
        pruning._enable()
        layers = {id(getattr(m, "weight", None)): m for m in trainer.model.modules()}
        for param, mask in zip(pruning.parameters, pruning.masks):
            def before_forward(module, inputs, param=param, mask=mask):
                param.data.mul_(mask)
            hooks.append(layers[id(param)].register_forward_pre_hook(before_forward))
        after_step = pruning.optimizer_post_step

        def post_step(*args):
            pruning.apply()
            after_step(*args)
        pruning.optimizer_post_step = post_step
    return hooks


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="32,64")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", type=Path, default=RESULTS / "masking.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device("cpu")
    precision = resolve_precision("auto", device)
    rows = []
    for size in map(int, args.sizes.split(",")):
        trainer = Trainer(device, precision, size, args.batch)
        trainer.time_steps(1)          # the masks are set and the state of pruned weights is zeroed
        pruning = trainer.step_fn.manager.modifiers[0]
        seconds = {way: [] for way in WAYS}
        for _ in range(args.rounds):
            for way in WAYS:
                hooks = enforce(trainer, way)
                seconds[way].append(trainer.time_steps(args.steps))
                for hook in hooks:
                    hook.remove()
                pruning.__dict__.pop("optimizer_post_step", None)
                pruning._enable()
                pruning.set_masks(pruning.masks)    # unmasked steps moved pruned weights and their momentum
        medians = {k: statistics.median(v) for k, v in seconds.items()}
        rows.append({"size": size, "batch": args.batch, "images_per_s": {k: args.batch / v for k, v in medians.items()},
                     "seconds": seconds, "speed_now_over_sparseml": medians["sparseml"] / medians["now"],
                     "speed_now_over_unmasked": medians["unmasked"] / medians["now"]})
        print(f"{size} px: " + ", ".join(f"{k} {args.batch / v:.1f} images/s" for k, v in medians.items()), flush=True)
    record = {"machine": {**machine(), "torch_threads": torch.get_num_threads()},
              "precision": precision, "masks": "90% global magnitude over the residual blocks",
              "rounds": args.rounds, "steps": args.steps, "rows": rows}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print("\n| image size | images/s now | SparseML's way | unmasked (dense) | now / SparseML's way "
          "| now / unmasked |\n|---|---|---|---|---|---|")
    for r in rows:
        ips = r["images_per_s"]
        print(f"| {r['size']} px | {ips['now']:.1f} | {ips['sparseml']:.1f} | {ips['unmasked']:.1f} "
              f"| {r['speed_now_over_sparseml']:.2f}x | {r['speed_now_over_unmasked']:.2f}x |")


if __name__ == "__main__":
    main()
