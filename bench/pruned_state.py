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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from training_speed import RESULTS, Trainer, time_ways, write_ways  # noqa: E402

STALLED = 4 * 2.0 ** -149      # where 0.9 x momentum stalls: 4 x the smallest float32 denormal, 5.6e-45


def pruned_momentum(value: float):
    """A way of the step: every pruned weight's momentum set to `value` (nothing to undo)."""
    def set_up(trainer: Trainer):
        for param, mask in zip(trainer.pruning.parameters, trainer.pruning.masks):
            trainer.step_fn.optimizer.state[param]["momentum_buffer"][mask == 0] = value
        return lambda: None
    return set_up


def main():
    args, rows = time_ways(__doc__.splitlines()[0], RESULTS / "pruned_state.json",
                           {"stalled": pruned_momentum(STALLED), "zero": pruned_momentum(0.0)}, rounds=3, steps=10)
    for r in rows:
        r["zero_vs_stalled"] = r["images_per_s"]["zero"] / r["images_per_s"]["stalled"]
    write_ways(args, rows)
    print("\n| image size | momentum of pruned weights stalled at 5.6e-45: images/s | zero: images/s | ratio |\n"
          "|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} px | {r['images_per_s']['stalled']:.1f} | {r['images_per_s']['zero']:.1f} "
              f"| {r['zero_vs_stalled']:.2f}x |")


if __name__ == "__main__":
    main()
