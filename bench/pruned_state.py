"""What the optimizer state of pruned weights costs a CPU training step.

A pruned weight's gradient is masked, so its momentum only decays, and a decaying float32
stalls at the smallest denormals (0.9 x 5.6e-45 rounds back to 5.6e-45); CPUs compute on
denormals many times slower. Before the pruning modifiers zeroed that state at each mask
change, every run that trained long enough at high sparsity ended with most of its momentum
denormal (the 32-epoch 90% run's checkpoint at epoch 30: 10.0 of 11.2 million entries).
This times `compress`'s training step (`training_speed.Trainer`: loader, 90% masks, autocast,
fused SGD) with the pruned weights' momentum as such a run held it and as zero, interleaved
round by round, at each image size.

    python bench/pruned_state.py                      # 32 and 64 px, batch 64, this machine's threads
    python bench/pruned_state.py --sizes 64 --rounds 5 --steps 5

Writes bench/results/pruned_state.json and prints a Markdown table.
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

STALLED = 4 * 2.0 ** -149      # where 0.9 x momentum stalls: 4 x the smallest float32 denormal, 5.6e-45


def set_pruned_momentum(trainer: Trainer, value: float) -> int:
    """Set the momentum of every pruned weight to `value`; returns how many entries that is."""
    pruning = trainer.step_fn.manager.modifiers[0]
    count = 0
    for param, mask in zip(pruning.parameters, pruning.masks):
        pruned = mask == 0
        trainer.step_fn.optimizer.state[param]["momentum_buffer"][pruned] = value
        count += int(pruned.sum())
    return count


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="32,64")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", type=Path, default=RESULTS / "pruned_state.json")
    args = ap.parse_args()
    device = resolve_device("cpu")
    precision = resolve_precision("auto", device)
    rows = []
    for size in map(int, args.sizes.split(",")):
        trainer = Trainer(device, precision, size, args.batch)
        trainer.time_steps(1)          # the masks are set and the state of pruned weights is zeroed
        seconds = {"stalled": [], "zero": []}
        for _ in range(args.rounds):
            for state, value in (("stalled", STALLED), ("zero", 0.0)):
                pruned = set_pruned_momentum(trainer, value)
                seconds[state].append(trainer.time_steps(args.steps))
        medians = {k: statistics.median(v) for k, v in seconds.items()}
        rows.append({"size": size, "batch": args.batch, "pruned_entries": pruned,
                     "images_per_s": {k: args.batch / v for k, v in medians.items()},
                     "seconds": seconds, "zero_vs_stalled": medians["stalled"] / medians["zero"]})
        print(f"{size} px: {args.batch / medians['stalled']:.1f} images/s with stalled momentum, "
              f"{args.batch / medians['zero']:.1f} with zero ({rows[-1]['zero_vs_stalled']:.2f}x)", flush=True)
    record = {"machine": {**machine(), "torch_threads": torch.get_num_threads()},
              "precision": precision, "masks": "90% global magnitude over the residual blocks",
              "rounds": args.rounds, "steps": args.steps, "rows": rows}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print("\n| image size | momentum of pruned weights stalled at 5.6e-45: images/s | zero: images/s | ratio |\n"
          "|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} px | {r['images_per_s']['stalled']:.1f} | {r['images_per_s']['zero']:.1f} "
              f"| {r['zero_vs_stalled']:.2f}x |")


if __name__ == "__main__":
    main()
