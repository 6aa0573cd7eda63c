"""Training throughput of resnet18 (images/s) under each speed setting, measured in one run.

Trains on random uint8 images already in memory (so decoding is not timed), with 40
BCE outputs as `compress` does, and interleaves the variants round by round so that
the machine's drift touches each alike. Also times one epoch of the old per-item
DataLoader path against the batch-sliced tensor cache that `train` now uses.

    python bench/training_speed.py                 # 64 px, batch 64, 3 rounds
    python bench/training_speed.py --size 96 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from sparsebias.data.images import normalize
from sparsebias.models import build_model
from sparsebias.train import autocast_context

RESULTS = Path(__file__).parent / "results"


def _step_time(model, opt, x, y, *, channels_last: bool, bf16: bool, steps: int) -> float:
    loss_fn = torch.nn.BCEWithLogitsLoss()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    model.train()
    started = None
    for i in range(steps + 2):      # two warm-up steps
        if i == 2:
            started = time.perf_counter()
        batch = normalize(x).contiguous(memory_format=memory_format)
        with autocast_context("cpu", "bf16" if bf16 else "fp32"):
            loss = loss_fn(model(batch).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - started) / steps


def _loader_time(n: int, size: int, batch: int) -> dict:
    """One epoch of batches: per-item DataLoader over a uint8 tensor vs slicing the tensor by index."""
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
    labels = torch.rand(n, 40).round()
    dataset = torch.utils.data.TensorDataset(images, labels)
    t0 = time.perf_counter()
    for _ in torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True):
        pass
    per_item = time.perf_counter() - t0
    t0 = time.perf_counter()
    order = torch.randperm(n)
    for s in range(0, n, batch):
        rows = order[s:s + batch]
        images[rows], labels[rows]
    sliced = time.perf_counter() - t0
    return {"images": n, "per_item_dataloader_s": round(per_item, 4), "batch_slice_s": round(sliced, 4)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    torch.manual_seed(0)
    x = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
    y = torch.rand(args.batch, 40).round()
    variants = {"fp32": (False, False), "fp32 channels_last": (True, False),
                "bf16 autocast": (False, True), "bf16 autocast + channels_last": (True, True)}
    models = {}
    for name in variants:
        torch.manual_seed(0)
        model = build_model("resnet18", 40)
        models[name] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4))
    times = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, (cl, bf16) in variants.items():
            times[name].append(_step_time(*models[name], x, y, channels_last=cl, bf16=bf16, steps=args.steps))
            print(f"round {r + 1}/{args.rounds}  {name:32s} {args.batch / times[name][-1]:7.1f} images/s", flush=True)
    base = statistics.median(times["fp32"])
    rows = [{"variant": name, "images_per_s": round(args.batch / statistics.median(t), 1),
             "vs_fp32": round(base / statistics.median(t), 2)} for name, t in times.items()]
    record = {
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "bf16_cpu": torch.backends.mkldnn.is_available() and _has_flag("avx512_bf16"),
                    "python": platform.python_version(), "torch": torch.__version__},
        "settings": {"arch": "resnet18", "outputs": 40, "size": args.size, "batch": args.batch,
                     "steps": args.steps, "rounds": args.rounds, "statistic": "median over rounds"},
        "variants": rows,
        "loader_epoch_4000": _loader_time(4000, args.size, args.batch),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"training_speed_{args.size}px_b{args.batch}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _has_flag(flag: str) -> bool:
    try:
        return flag in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


if __name__ == "__main__":
    main()
